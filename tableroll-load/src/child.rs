//! A child process whose output is read on threads: its stdout line by line, each line handed to
//! a callback of the caller's with the moment it was read; its stderr kept (whole or a bounded
//! tail) so that it can be shown, or waited on for a phrase; and on drop the process killed by
//! the pid it was spawned with, then reaped.
//!
//! One core for the drill's generations and the test kit's harness. It never panics and prints
//! nothing: what a failure means is the caller's to say. Where the child runs (its process
//! group, its user) and what its stdin is are set by the caller on the [`Command`] it passes.

use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;

/// How many times a spawn that failed with "text file busy" is tried again.
const BUSY_RETRIES: u32 = 1000;

/// A running child process with its stdout and stderr piped and read on threads.
///
/// On drop the process is killed (`SIGKILL`, by the pid it was spawned with, which cannot have
/// been reused while it is not reaped) and reaped, unless it was reaped already.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    status: Option<ExitStatus>,
    /// Until [`Child::read_stdout`] takes it.
    stdout: Option<ChildStdout>,
    stderr: Arc<Stderr>,
}

impl Child {
    /// Spawns `cmd` with stdout and stderr piped (stdin stays as `cmd` sets it: std's default
    /// inherits it), and starts collecting its stderr: all of it if `stderr_limit` is `None`,
    /// else its last `stderr_limit` bytes. Its stdout is read once [`Child::read_stdout`] says
    /// what to do with a line.
    ///
    /// A binary just written (by this process, or a test) may still be open for writing in a
    /// child that another thread is forking, until that child execs: a spawn that fails with
    /// "text file busy" is tried again.
    ///
    /// # Errors
    ///
    /// Spawning failed, or the thread that reads stderr could not be started (the child is then
    /// killed and reaped).
    pub fn spawn(cmd: &mut Command, stderr_limit: Option<usize>) -> io::Result<Child> {
        Child::spawn_reading_stderr(cmd, stderr_limit, |_, _| true)
    }

    /// As [`Child::spawn`], and hands each whole line of stderr to `on_line` with the moment it
    /// was read, until `on_line` returns `false` (stderr is still collected).
    ///
    /// # Errors
    ///
    /// As [`Child::spawn`].
    pub fn spawn_reading_stderr(
        cmd: &mut Command,
        stderr_limit: Option<usize>,
        on_line: impl FnMut(Instant, String) -> bool + Send + 'static,
    ) -> io::Result<Child> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(cmd)?;
        let (stdout, err) = (child.stdout.take(), child.stderr.take());
        let stderr = Arc::new(Stderr::new(stderr_limit));
        let child = Child { child, status: None, stdout, stderr: stderr.clone() };
        let err = err.ok_or_else(|| io::Error::other("the child's stderr is not piped"))?;
        thread::Builder::new()
            .name(format!("child-{}-stderr", child.pid()))
            .spawn(move || collect_stderr(err, &stderr, on_line))?;
        Ok(child)
    }

    /// Starts the thread that reads stdout: each line is handed to `on_line` as `Some` with the
    /// moment it was read, then `None` once stdout ends (or cannot be read, or a line is not
    /// UTF-8), until `on_line` returns `false`. Separate from [`Child::spawn`] so that `on_line`
    /// may use what only the spawned process tells, such as its pid.
    ///
    /// # Errors
    ///
    /// Stdout was taken already, or the thread could not be started.
    pub fn read_stdout(
        &mut self,
        mut on_line: impl FnMut(Instant, Option<String>) -> bool + Send + 'static,
    ) -> io::Result<()> {
        let stdout = self.stdout.take().ok_or_else(|| io::Error::other("stdout is read once"))?;
        thread::Builder::new().name(format!("child-{}-stdout", self.pid())).spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !on_line(Instant::now(), Some(line)) {
                    return;
                }
            }
            on_line(Instant::now(), None);
        })?;
        Ok(())
    }

    /// Its stdin, if `cmd` piped it; dropping it closes the pipe.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The process id it was spawned with.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process was reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// What it wrote to stderr so far (the tail, if limited), invalid UTF-8 replaced.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().bytes).into_owned()
    }

    /// Waits until the process wrote `needle` to stderr (within the part kept); `false` if it
    /// did not within `timeout`, or closed stderr first.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.stderr.lock();
        loop {
            if String::from_utf8_lossy(&state.bytes).contains(needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.closed {
                return false;
            }
            state = self.stderr.grew.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Reaps the process if it has exited, without waiting (`waitpid(2)` with `WNOHANG`).
    ///
    /// # Errors
    ///
    /// `waitpid(2)` failed.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits for the process to exit (if it was not reaped yet) and returns its status.
    ///
    /// # Errors
    ///
    /// `waitpid(2)` failed.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Sends `SIGKILL` to the process (by the pid it was spawned with) and reaps it, unless it
    /// was reaped already; returns its status.
    ///
    /// # Errors
    ///
    /// `kill(2)` or `waitpid(2)` failed.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            self.child.kill()?;
        }
        self.wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Spawns `cmd`, trying again while it fails with "text file busy".
fn spawn_retrying_busy(cmd: &mut Command) -> io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(Errno::TXTBSY.raw_os_error()) && attempts < BUSY_RETRIES => {
                attempts += 1;
                thread::yield_now();
            }
            result => return result,
        }
    }
}

/// What a child wrote to stderr so far, with a condition signalled as it grows or closes.
#[derive(Debug)]
struct Stderr {
    state: Mutex<StderrState>,
    grew: Condvar,
}

#[derive(Debug)]
struct StderrState {
    bytes: Vec<u8>,
    /// How many bytes are kept, the last ones; `None` keeps all.
    limit: Option<usize>,
    closed: bool,
}

impl Stderr {
    fn new(limit: Option<usize>) -> Stderr {
        Stderr {
            state: Mutex::new(StderrState { bytes: Vec::new(), limit, closed: false }),
            grew: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StderrState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, chunk: &[u8]) {
        let mut state = self.lock();
        state.bytes.extend_from_slice(chunk);
        if let Some(limit) = state.limit.filter(|&limit| state.bytes.len() > limit) {
            let mut cut = state.bytes.len() - limit;
            // Not in the middle of a character: skip its continuation bytes.
            while state.bytes.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
                cut += 1;
            }
            state.bytes.drain(..cut);
        }
        self.grew.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }
}

/// Appends everything the child writes to stderr to `log` as it comes, and hands each whole line
/// to `on_line` until it returns `false`.
fn collect_stderr(mut err: ChildStderr, log: &Stderr, mut on_line: impl FnMut(Instant, String) -> bool) {
    let mut buf = [0u8; 4096];
    let (mut line, mut reading) = (Vec::new(), true);
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        log.append(&buf[..n]);
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
    log.close();
}

#[cfg(test)]
mod tests;
