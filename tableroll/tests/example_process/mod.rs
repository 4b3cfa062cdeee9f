//! The library's examples as child processes, for the tests that upgrade them.
//!
//! Each example prints one line per step on stdout, a word then `key=value` fields
//! (`ready pid=4242 addr=127.0.0.1:8080`). A [`Example`] reads them on a thread so that a test
//! can wait for a line instead of sleeping; the timeouts here only turn a hang into a failure
//! that shows the command, its status, its stdout and its stderr.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Instant, SystemTime};

use crate::util::{read_response, Response, TIMEOUT};

/// The examples these tests run; they are built together when one is missing or stale.
const EXAMPLES: [&str; 4] = ["axum", "std_http", "unix_socket", "connection_handover"];

/// The binary of example `name` in `target/<profile>/examples/`. `cargo test` builds the
/// examples, but not when only some test targets are selected: if one is missing or older than
/// the sources, all of [`EXAMPLES`] are built once with `cargo build --example …` in the same
/// profile.
pub fn example_binary(name: &str) -> PathBuf {
    assert!(EXAMPLES.contains(&name), "example {name:?} is not in EXAMPLES");
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = PROFILE_DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned();
        if EXAMPLES.iter().any(|name| is_stale(&profile_dir.join("examples").join(name), name)) {
            build_examples(&profile_dir);
        }
        profile_dir
    });
    let binary = profile_dir.join("examples").join(name);
    assert!(binary.exists(), "example {name} is missing at {} even after building it", binary.display());
    binary
}

fn is_stale(binary: &Path, name: &str) -> bool {
    let Ok(built) = fs::metadata(binary).and_then(|m| m.modified()) else { return true };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources =
        [root.join("src"), root.join("examples").join(format!("{name}.rs")), root.join("Cargo.toml")];
    sources.iter().any(|source| newest_modification(source) > built)
}

fn newest_modification(path: &Path) -> SystemTime {
    let Ok(meta) = fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    let own = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    let entries = fs::read_dir(path).into_iter().flatten().flatten();
    entries.map(|entry| newest_modification(&entry.path())).fold(own, SystemTime::max)
}

fn build_examples(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--manifest-path"]).arg(&manifest);
    for name in EXAMPLES {
        cmd.args(["--example", name]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    // Build into the same target directory (cargo marks its root with CACHEDIR.TAG).
    if let Some(target_dir) = profile_dir.parent().filter(|t| t.join("CACHEDIR.TAG").exists()) {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?} to build the examples: {e}"));
    assert!(
        output.status.success(),
        "building the examples failed: {cmd:?}\nstatus: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One stdout line: `word key=value key=value`.
#[derive(Debug, Clone)]
pub struct Line {
    pub word: String,
    pub fields: BTreeMap<String, String>,
    pub raw: String,
}

impl Line {
    fn parse(raw: String) -> Line {
        let mut parts = raw.split_whitespace();
        let word = parts.next().unwrap_or_default().to_string();
        let fields = parts
            .filter_map(|part| part.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Line { word, fields, raw }
    }

    /// The value of `key`; panics with the line if it is missing.
    #[track_caller]
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).unwrap_or_else(|| panic!("no {key}= in line {:?}", self.raw))
    }
}

/// A running example. Its stdout lines are read on a thread; on drop it is killed (by the pid
/// it was spawned with, before it is reaped) and, if the test is failing, its output printed.
pub struct Example {
    command: String,
    child: Child,
    status: Option<ExitStatus>,
    lines: Receiver<String>,
    pending: VecDeque<Line>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Whether a failure message already showed the diagnostics.
    reported: bool,
}

impl Example {
    /// Starts example `name` with `args`.
    pub fn start(name: &str, args: &[OsString]) -> Example {
        let mut cmd = Command::new(example_binary(name));
        cmd.args(args);
        // A test run under systemd must not make the examples report to it.
        cmd.env_remove("NOTIFY_SOCKET");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let log = stdout.clone();
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let err_log = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                err_log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Example {
            command,
            child,
            status: None,
            lines,
            pending: VecDeque::new(),
            stdout,
            stderr,
            reported: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything known about the process, for failure messages.
    pub fn diagnostics(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "still running (or not yet reaped)".to_string(),
        };
        format!(
            "command: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}\n",
            self.command,
            self.stdout.lock().unwrap().join("\n"),
            String::from_utf8_lossy(&self.stderr.lock().unwrap()),
        )
    }

    /// Fails the test with `message` and this process's diagnostics.
    #[track_caller]
    pub fn fail(&mut self, message: &str) -> ! {
        self.reported = true;
        panic!("{message}\n--- {}", self.diagnostics())
    }

    /// Waits for the first line starting with `word` not consumed yet; other lines stay pending.
    #[track_caller]
    pub fn wait_for(&mut self, word: &str) -> Line {
        if let Some(i) = self.pending.iter().position(|line| line.word == word) {
            return self.pending.remove(i).expect("position is in range");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(raw) => {
                    let line = Line::parse(raw);
                    if line.word == word {
                        return line;
                    }
                    self.pending.push_back(line);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.reap();
                    self.fail(&format!("stdout ended before a {word:?} line"));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("timed out after {TIMEOUT:?} waiting for a {word:?} line"))
                }
            }
        }
    }

    /// Waits for stdout to end (the process exited; at most [`TIMEOUT`]), then reaps it.
    fn reap(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(raw) => self.pending.push_back(Line::parse(raw)),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("timed out after {TIMEOUT:?} waiting for exit"))
                }
            }
        }
        let status = self.child.wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.command));
        self.status = Some(status);
        status
    }

    /// Waits for the `exit` line and a zero exit status; returns the `exit` line.
    #[track_caller]
    pub fn expect_clean_exit(&mut self) -> Line {
        let exit = self.wait_for("exit");
        if !self.reap().success() {
            self.fail("the example printed its exit line but its status is not 0");
        }
        exit
    }

    /// Sends SIGKILL to the process (by the pid it was spawned with) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("reaping a killed example"));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.reported {
            eprintln!("--- {}", self.diagnostics());
        }
    }
}

/// `[dir, rest…]` as the arguments of an example.
pub fn args(dir: &Path, rest: &[&str]) -> Vec<OsString> {
    std::iter::once(dir.as_os_str().to_owned()).chain(rest.iter().map(OsString::from)).collect()
}

/// A `POST /upload` whose body comes in two parts: the server's handler is busy with it, in
/// flight, from the moment it prints `upload` until [`HeldUpload::finish`] sends the rest.
pub struct HeldUpload {
    conn: TcpStream,
}

impl HeldUpload {
    /// The body's length, of which half is sent at the start and half at the finish.
    pub const LENGTH: usize = 10;

    /// Sends the head and the first half of the body to `addr`.
    pub fn start(addr: &str) -> HeldUpload {
        let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        conn.set_read_timeout(Some(TIMEOUT)).expect("set_read_timeout");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            Self::LENGTH
        );
        conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(b"first")).expect("sending the upload");
        HeldUpload { conn }
    }

    /// Sends the rest of the body and reads the response.
    pub fn finish(mut self) -> Response {
        self.conn.write_all(b"after").expect("sending the rest of the upload");
        read_response(&mut self.conn).expect("the upload's response")
    }
}
