//! The supervised program: started as socket activation starts it, signalled through a pidfd,
//! reaped by the supervisor.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::io::{fcntl_dupfd_cloexec, fcntl_setfd, FdFlags};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::leftovers::{reaped_own, spawn_own};

/// A running program and the means to watch it.
pub struct Child {
    child: std::process::Child,
    /// Readable once the process exited; signals through it cannot reach a reused pid.
    pidfd: OwnedFd,
    /// The drain watchdog (`tableroll drain-watchdog`), stopped once the program was reaped.
    watchdog: Option<std::process::Child>,
    pub started: Instant,
}

/// What the program gets: its command line, the listeners (name and socket, in order) and
/// where to report readiness.
pub struct Launch<'a> {
    pub command: &'a [OsString],
    pub listeners: &'a [(String, BorrowedFd<'a>)],
    pub notify_socket: Option<&'a Path>,
    pub generation: Option<u64>,
    /// Sent when the supervisor dies, as the parent-death signal.
    pub stop_signal: super::args::Signal,
    /// What the drain watchdog gives the program if the supervisor dies.
    pub drain_timeout: Duration,
}

impl Child {
    /// Starts the program through `tableroll exec-activated`, which puts the listeners at
    /// descriptors 3, 4, ..., sets `LISTEN_PID` in the program's own process and makes the
    /// supervisor's death send the program its stop signal (this thread, the one that spawns,
    /// lives as long as the supervisor, which is what the death signal follows). The program
    /// runs in a process group of its own, so a Ctrl-C at a terminal reaches it once, through
    /// the supervisor, and a kill after the drain timeout reaches its helpers too. A drain
    /// watchdog joins that group (see `watchdog`): it kills the group after the drain timeout
    /// if the supervisor dies.
    pub fn spawn(launch: &Launch<'_>) -> io::Result<Child> {
        let me = std::env::current_exe()?;
        // Inheritable copies, only for as long as the spawn takes: the supervisor starts
        // nothing else meanwhile (readiness commands run later, from this same thread).
        let mut passed = Vec::with_capacity(launch.listeners.len());
        for (_, fd) in launch.listeners {
            let copy = fcntl_dupfd_cloexec(fd, 3)?;
            fcntl_setfd(&copy, FdFlags::empty())?;
            passed.push(copy);
        }
        let mut cmd = Command::new(me);
        cmd.arg("exec-activated").arg("--parent").arg(std::process::id().to_string());
        cmd.arg("--stop-signal").arg(launch.stop_signal.0.to_string());
        for fd in &passed {
            cmd.arg("--fd").arg(fd.as_raw_fd().to_string());
        }
        cmd.arg("--").args(launch.command);
        let names: Vec<&str> = launch.listeners.iter().map(|(name, _)| name.as_str()).collect();
        cmd.env("LISTEN_FDS", names.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID");
        match launch.generation {
            Some(n) => cmd.env("TABLEROLL_GENERATION", n.to_string()),
            None => cmd.env_remove("TABLEROLL_GENERATION"),
        };
        match launch.notify_socket {
            Some(path) => cmd.env("NOTIFY_SOCKET", path),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        cmd.stdin(Stdio::null()).process_group(0);
        let started = Instant::now();
        let child = spawn_own(|| cmd.spawn());
        drop(passed);
        let child = child?;
        let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| io::Error::other("the child has pid 0"))?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
        let mut child = Child { child, pidfd, watchdog: None, started };
        // Not reaped yet, the program keeps its group's id for the watchdog to join.
        match start_watchdog(pid, launch) {
            Ok(watchdog) => child.watchdog = Some(watchdog),
            Err(e) => {
                child.kill_group();
                child.child.wait().ok();
                reaped_own(child.child.id());
                return Err(io::Error::new(e.kind(), format!("starting the drain watchdog: {e}")));
            }
        }
        Ok(child)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Readable once the process exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The exit status if the process exited (and reaps it, and ends its watchdog).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            reaped_own(self.child.id());
            self.stop_watchdog();
        }
        Ok(status)
    }

    /// Kills and reaps the watchdog: a child of the supervisor, its pid cannot be reused first.
    fn stop_watchdog(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.kill().ok();
            if watchdog.wait().is_ok() {
                reaped_own(watchdog.id());
            }
        }
    }

    /// Sends `signal` to the program (not to its process group). An exited program is not
    /// an error: the signal simply has nobody to reach.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match pidfd_send_signal(&self.pidfd, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills the program's whole process group: the program and whatever it started.
    pub fn kill_group(&self) {
        self.signal(Signal::KILL).ok();
        if let Some(group) = Pid::from_raw(self.child.id() as i32) {
            rustix::process::kill_process_group(group, Signal::KILL).ok();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop_watchdog();
    }
}

/// Starts `tableroll drain-watchdog` as a child of the supervisor, in the program's process
/// group `group`, with nothing of the supervisor's but stderr.
fn start_watchdog(group: Pid, launch: &Launch<'_>) -> io::Result<std::process::Child> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("drain-watchdog").arg("--supervisor-pid").arg(std::process::id().to_string());
    cmd.arg("--stop-signal").arg(launch.stop_signal.0.to_string());
    cmd.arg("--drain-timeout-ms").arg(launch.drain_timeout.as_millis().to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).process_group(group.as_raw_pid());
    spawn_own(|| cmd.spawn())
}

/// The exit code that stands for `status`: its code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

/// `status` in words: "exited with status 3" or "was killed by SIGKILL".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by {}", super::args::Signal(signal).name()),
        (None, None) => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(describe(ExitStatus::from_raw(15)), "was killed by SIGTERM");
        assert_eq!(describe(ExitStatus::from_raw(2 << 8)), "exited with status 2");
    }
}
