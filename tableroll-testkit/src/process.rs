//! A child process whose output is captured: its stdout read line by line on a thread (each
//! line logged, then handed to the harness that started it), its stderr collected on another,
//! and both shown with the command and its status when a test fails. The reading, the waiting
//! and the killing are `tableroll_load`'s [`Child`], shared with the drill; this layer adds what
//! only a test does: panicking, and printing the diagnostics.
//!
//! The harnesses built on it (the library tests' `Peer` and `Example`, the CLI tests'
//! `Instance`) differ only in what a line means to them; they wait for lines through
//! [`crate::events::Events`].

use std::cell::Cell;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tableroll_load::Child;

/// A running child process with captured output. On drop it is killed (by the pid it was
/// spawned with, before it is reaped) and, if the test is failing, its diagnostics are printed
/// unless a failure message already showed them.
///
/// A test's layer over [`tableroll_load::Child`] (which the drill uses too): what it adds is
/// the panics, the stdout kept for the diagnostics, and the diagnostics.
pub struct Process {
    /// A first line for the diagnostics, naming the process among others (`peer p1`).
    heading: Option<String>,
    command: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
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
        cmd.stdin(Stdio::null());
        let command = format!("{cmd:?}");
        let child = Child::spawn_reading_stderr(cmd, None, on_line)
            .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        Process {
            heading: None,
            command,
            child,
            stdout: Arc::new(Mutex::new(Vec::new())),
            reported: Cell::new(false),
        }
    }

    /// Starts the thread that reads stdout: each line is logged for the diagnostics, then handed
    /// to `on_line` with the moment it was read, until stdout ends or `on_line` returns `false`
    /// (its receiver is gone). Separate from [`Process::spawn`] so that `on_line` may use what
    /// only the spawned process tells, such as its pid.
    pub fn read_stdout(&mut self, mut on_line: impl FnMut(Instant, String) -> bool + Send + 'static) {
        let log = self.stdout.clone();
        let read = self.child.read_stdout(move |at, line| {
            let Some(line) = line else { return false };
            log.lock().unwrap().push(line.clone());
            on_line(at, line)
        });
        read.unwrap_or_else(|e| panic!("reading the stdout of {}: {e}", self.command));
    }

    /// Names the process in the first line of its diagnostics.
    pub fn set_heading(&mut self, heading: String) {
        self.heading = Some(heading);
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The exit status, once the process was reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.child.status()
    }

    /// Every line read from stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything known about the process, for failure messages.
    pub fn diagnostics(&self) -> String {
        let heading = self.heading.as_ref().map(|h| format!("{h}\n")).unwrap_or_default();
        let status = match self.child.status() {
            Some(status) => status.to_string(),
            None => "still running (or not yet reaped)".to_string(),
        };
        format!(
            "{heading}command: {}\nstatus: {status}\nstdout:\n{}\nstderr:\n{}\n",
            self.command,
            self.stdout.lock().unwrap().join("\n"),
            self.child.stderr(),
        )
    }

    /// Waits until the process wrote `needle` to stderr; `false` if it did not within
    /// `timeout` (or closed stderr first).
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.child.wait_for_stderr(needle, timeout)
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
        self.child.wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.command))
    }

    /// Whether the process is still running (not exited), without waiting.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGKILL to the process (by the pid it was spawned with) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap_or_else(|e| panic!("killing {}: {e}", self.command));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Not `kill`: a panic while the test panics would abort.
        let _ = self.child.kill();
        if thread::panicking() && !self.reported.get() {
            eprintln!("--- {}", self.diagnostics());
        }
    }
}
