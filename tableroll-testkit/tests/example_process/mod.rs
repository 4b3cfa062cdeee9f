//! The library's examples as child processes, for the tests that upgrade them.
//!
//! Each example prints one line per step on stdout, a word then `key=value` fields
//! (`ready pid=4242 addr=127.0.0.1:8080`). A [`Example`] reads them on a thread so that a test
//! can wait for a line instead of sleeping; the timeouts here only turn a hang into a failure
//! that shows the command, its status, its stdout and its stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Instant;

use tableroll_testkit::events::{Events, Missed};
use tableroll_testkit::process::Process;

use crate::util::examples;
use crate::util::{read_response, Response, TIMEOUT};

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
    /// First, so that it is killed (and its output printed) while `lines` still has a
    /// receiver: the reading thread logs stdout until then.
    process: Process,
    lines: Events<Line>,
}

impl Example {
    /// Starts example `name` (as cargo built it for these tests) with `args`.
    pub fn start(name: &str, args: &[OsString]) -> Example {
        Example::start_under(&[], name, args)
    }

    /// Starts example `name` with `args` through `wrapper`, a command that executes the rest of
    /// its arguments in its own process (`prlimit --nofile=64 --`), so that the pid is the
    /// example's.
    pub fn start_under(wrapper: &[&str], name: &str, args: &[OsString]) -> Example {
        let binary = examples::binary(name).as_os_str().to_owned();
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.args(args);
        // A test run under systemd must not make the examples report to it.
        cmd.env_remove("NOTIFY_SOCKET");
        let mut process = Process::spawn(&mut cmd);
        let (tx, lines) = Events::channel();
        process.read_stdout(move |at, line| tx.send((at, Line::parse(line))).is_ok());
        Example { process, lines }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything known about the process, for failure messages.
    #[allow(dead_code)] // for a test to use in a failure message or a cleanup of its own
    pub fn diagnostics(&self) -> String {
        self.process.diagnostics()
    }

    /// Fails the test with `message` and this process's diagnostics.
    #[track_caller]
    pub fn fail(&mut self, message: &str) -> ! {
        self.process.fail(message)
    }

    /// Waits for the first line starting with `word` not consumed yet; other lines stay pending.
    #[track_caller]
    pub fn wait_for(&mut self, word: &str) -> Line {
        let deadline = Instant::now() + TIMEOUT;
        match self.lines.wait(deadline, |line| line.word == word, |_| false) {
            Ok((_, line)) => line,
            Err(Missed::TimedOut) => {
                self.fail(&format!("timed out after {TIMEOUT:?} waiting for a {word:?} line"))
            }
            Err(Missed::Ended | Missed::Stopped(..)) => {
                let _ = self.reap();
                self.fail(&format!("stdout ended before a {word:?} line"))
            }
        }
    }

    /// Waits for stdout to end (the process exited; at most [`TIMEOUT`]), then reaps it.
    #[track_caller]
    fn reap(&mut self) -> ExitStatus {
        if let Some(status) = self.process.status() {
            return status;
        }
        if !self.lines.wait_end(Instant::now() + TIMEOUT) {
            self.fail(&format!("timed out after {TIMEOUT:?} waiting for exit"));
        }
        self.process.wait()
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
    #[allow(dead_code)] // for a test to use in a failure message or a cleanup of its own
    pub fn kill(&mut self) {
        self.process.kill()
    }
}

/// `[dir, rest…]` as the arguments of an example.
pub fn args(dir: &Path, rest: &[&str]) -> Vec<OsString> {
    std::iter::once(dir.as_os_str().to_owned()).chain(rest.iter().map(OsString::from)).collect()
}

/// A `POST /upload` whose body comes in two parts: the server's handler is busy with it, in
/// flight, from the moment it prints `upload` until [`HeldUpload::finish`] sends the rest.
#[allow(dead_code)] // not every test that runs examples holds an upload
pub struct HeldUpload {
    conn: TcpStream,
}

#[allow(dead_code)]
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
    pub fn finish(self) -> Response {
        self.try_finish().expect("sending the rest of the upload and reading the response")
    }

    /// Sends the rest of the body and reads the response, or says why it could not.
    pub fn try_finish(mut self) -> std::io::Result<Response> {
        self.conn.write_all(b"after")?;
        read_response(&mut self.conn)
    }
}

/// An upgrade with a request in flight: holds an upload on `old` (ready, listening on `addr`),
/// starts the next generation with `start_new`, checks that it inherits `addr`, and waits until
/// `old` drains. Returns the new generation and the upload, still held.
#[allow(dead_code)] // not every test that runs examples holds an upload
pub fn upgrade_with_upload_in_flight(
    old: &mut Example,
    addr: &str,
    start_new: impl FnOnce() -> Example,
) -> (Example, HeldUpload) {
    let upload = HeldUpload::start(addr);
    // The old generation's handler is reading the body.
    old.wait_for("upload");
    let mut new = start_new();
    assert_eq!(new.wait_for("ready").get("addr"), addr, "the new generation inherits the socket");
    old.wait_for("draining");
    (new, upload)
}

/// Sends the rest of `upload` and checks that `old`, which held it, answered it and exited 0
/// saying it served `served` requests.
#[allow(dead_code)]
pub fn expect_upload_answered_by(upload: HeldUpload, old: &mut Example, served: &str) {
    let response = upload.finish();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, format!("received {} bytes; hello from {}\n", HeldUpload::LENGTH, old.pid()));
    assert_eq!(old.expect_clean_exit().get("served"), served);
}
