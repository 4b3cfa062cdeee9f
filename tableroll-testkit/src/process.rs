//! A child process whose output is captured: its stdout read line by line on a thread (each
//! line logged, then handed to the harness that started it), its stderr collected on another,
//! and both shown with the command and its status when a test fails.
//!
//! The harnesses built on it (the library tests' `Peer` and `Example`, the CLI tests'
//! `Instance`) differ only in what a line means to them; they wait for lines through
//! [`crate::events::Events`].

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `errno` for "text file busy".
const ETXTBSY: i32 = 26;

/// A running child process with captured output. On drop it is killed (by the pid it was
/// spawned with, before it is reaped) and, if the test is failing, its diagnostics are printed
/// unless a failure message already showed them.
pub struct Process {
    /// A first line for the diagnostics, naming the process among others (`peer p1`).
    heading: Option<String>,
    command: String,
    child: Child,
    status: Option<ExitStatus>,
    /// Until [`Process::read_stdout`] takes it.
    stdout_pipe: Option<ChildStdout>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Stderr>,
    /// Whether a failure message already showed the diagnostics.
    reported: Cell<bool>,
}

impl Process {
    /// Spawns `cmd` with stdin on `/dev/null` and stdout and stderr piped, and starts collecting
    /// its stderr. Its stdout is read once [`Process::read_stdout`] says what to do with a line.
    pub fn spawn(cmd: &mut Command) -> Process {
        Process::spawn_reading_stderr(cmd, |_, _| true)
    }

    /// As [`Process::spawn`], and hands each line of stderr to `on_line` with the moment it was
    /// read, until `on_line` returns `false` (the stderr is still collected).
    pub fn spawn_reading_stderr(
        cmd: &mut Command,
        on_line: impl FnMut(Instant, String) -> bool + Send + 'static,
    ) -> Process {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let mut child = spawn_retrying_busy(cmd, &command);
        let stdout_pipe = child.stdout.take();
        let stderr = Arc::new(Stderr::default());
        collect_stderr(&mut child, stderr.clone(), on_line);
        Process {
            heading: None,
            command,
            child,
            status: None,
            stdout_pipe,
            stdout: Arc::new(Mutex::new(Vec::new())),
            stderr,
            reported: Cell::new(false),
        }
    }

    /// Starts the thread that reads stdout: each line is logged for the diagnostics, then handed
    /// to `on_line` with the moment it was read, until stdout ends or `on_line` returns `false`
    /// (its receiver is gone). Separate from [`Process::spawn`] so that `on_line` may use what
    /// only the spawned process tells, such as its pid.
    pub fn read_stdout(&mut self, mut on_line: impl FnMut(Instant, String) -> bool + Send + 'static) {
        let out = BufReader::new(self.stdout_pipe.take().expect("stdout is read once"));
        let log = self.stdout.clone();
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                log.lock().unwrap().push(line.clone());
                if !on_line(at, line) {
                    break;
                }
            }
        });
    }

    /// Names the process in the first line of its diagnostics.
    pub fn set_heading(&mut self, heading: String) {
        self.heading = Some(heading);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process was reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Every line read from stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything known about the process, for failure messages.
    pub fn diagnostics(&self) -> String {
        let heading = self.heading.as_ref().map(|h| format!("{h}\n")).unwrap_or_default();
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "still running (or not yet reaped)".to_string(),
        };
        format!(
            "{heading}command: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}\n",
            self.command,
            self.stdout.lock().unwrap().join("\n"),
            String::from_utf8_lossy(&self.stderr.bytes.lock().unwrap()),
        )
    }

    /// Waits until the process wrote `needle` to stderr; `false` if it did not within
    /// `timeout` (or closed stderr first).
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut bytes = self.stderr.bytes.lock().unwrap();
        loop {
            if String::from_utf8_lossy(&bytes).contains(needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || *self.stderr.closed.lock().unwrap() {
                return false;
            }
            bytes = self.stderr.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }

    /// [`Process::diagnostics`], marked as shown: the drop of a failing test does not print them
    /// again.
    pub fn take_diagnostics(&self) -> String {
        self.reported.set(true);
        self.diagnostics()
    }

    /// Fails the test with `message` and the diagnostics.
    #[track_caller]
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n--- {}", self.take_diagnostics())
    }

    /// Waits for the process to exit (if it was not reaped yet) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = self.child.wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.command));
        self.status = Some(status);
        status
    }

    /// Whether the process is still running (not exited), without waiting.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(status) => {
                self.status = Some(status);
                false
            }
            None => true,
        }
    }

    /// Sends SIGKILL to the process (by the pid it was spawned with) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let status = self.child.wait().unwrap_or_else(|e| panic!("reaping {}: {e}", self.command));
            self.status = Some(status);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.reported.get() {
            eprintln!("--- {}", self.diagnostics());
        }
    }
}

/// Spawns `cmd`. A binary a test has just written (a copy of the peer) may still be open for
/// writing in a child that another test thread is forking, until that child execs: "text file
/// busy" passes, and is retried.
fn spawn_retrying_busy(cmd: &mut Command, command: &str) -> Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 1000 => {
                attempts += 1;
                thread::yield_now();
            }
            Err(e) => panic!("spawning {command}: {e}"),
        }
    }
}

/// What a child wrote to stderr so far, with a condition that is signalled as it grows.
#[derive(Default)]
struct Stderr {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
    closed: Mutex<bool>,
}

/// Appends everything `child` writes to stderr to `log`, on a thread, as it comes, and hands
/// each whole line to `on_line` until it returns `false`.
fn collect_stderr(
    child: &mut Child,
    log: Arc<Stderr>,
    mut on_line: impl FnMut(Instant, String) -> bool + Send + 'static,
) {
    let mut err = child.stderr.take().expect("piped stderr");
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (mut line, mut reading) = (Vec::new(), true);
        while let Ok(n @ 1..) = err.read(&mut buf) {
            log.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            log.grew.notify_all();
            let at = Instant::now();
            for &byte in &buf[..n] {
                if !reading {
                    break;
                } else if byte != b'\n' {
                    line.push(byte);
                } else {
                    reading = on_line(at, String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned());
                }
            }
        }
        *log.closed.lock().unwrap() = true;
        let _guard = log.bytes.lock().unwrap();
        log.grew.notify_all();
    });
}
