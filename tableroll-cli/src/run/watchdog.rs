//! `tableroll drain-watchdog`: the drain deadline that outlives a killed supervisor.
//!
//! The supervisor starts one next to each program, as its own child (not the program's: a
//! program that reaps its children until none is left must not wait for it), in the program's
//! process group. While the supervisor lives the watchdog does nothing, and the supervisor
//! ends it once the program was reaped. If the supervisor dies (SIGKILL, a crash), the program
//! gets the stop signal as its parent-death signal, and the watchdog gives it the drain
//! timeout: once the program exited, the rest of its group gets the stop signal too, and when
//! the time is up whatever is left of the group is killed, the watchdog with it.
//!
//! It reaches the program's process group only: a process that left the group is out of its
//! reach, and nothing reaps for the dead supervisor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, Pid, PidfdFlags, Signal};

use crate::sys::wait_readable;

/// How often the group is looked at once the program exited after its supervisor: nothing
/// wakes a process that is neither its parent nor its reaper when the last member exits.
const GROUP_CHECK: Duration = Duration::from_millis(100);

/// Arguments of the hidden `drain-watchdog` command.
#[derive(Debug, clap::Args)]
pub struct WatchdogArgs {
    /// The supervisor that started it: its parent, unless the supervisor died before the
    /// watchdog looked (it is then a child of a reaper).
    #[arg(long)]
    pub supervisor_pid: u32,
    /// The program's stop signal (a number), sent to its group once it exited.
    #[arg(long)]
    pub stop_signal: i32,
    /// The drain timeout, in milliseconds.
    #[arg(long)]
    pub drain_timeout_ms: u64,
}

pub fn run(args: WatchdogArgs) -> ExitCode {
    match watch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("tableroll: the drain watchdog failed: {e}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn watch(args: &WatchdogArgs) -> io::Result<()> {
    let stop = Signal::from_named_raw(args.stop_signal).ok_or_else(|| io::Error::other("not a signal"))?;
    // Caught and not acted on: a program that signals its own group must not end the watchdog.
    for signal in [Signal::TERM, Signal::INT, Signal::HUP, Signal::QUIT, Signal::USR1, Signal::USR2, stop] {
        signal_hook::flag::register(signal.as_raw(), Arc::new(AtomicBool::new(false)))?;
    }
    let group = rustix::process::getpgrp();
    let Some(supervisor) = supervisor(args.supervisor_pid)? else {
        // Gone already: its death is what is watched for.
        return drain_without_supervisor(group, stop, Duration::from_millis(args.drain_timeout_ms));
    };
    wait_readable(&[supervisor.as_fd()], None)?;
    drain_without_supervisor(group, stop, Duration::from_millis(args.drain_timeout_ms))
}

/// A pidfd of the supervisor `pid` while it is this process's parent, or `None` if it is gone
/// already: a parent of another pid is the reaper this process was handed to, not to be
/// watched.
fn supervisor(pid: u32) -> io::Result<Option<OwnedFd>> {
    let Some(parent) = rustix::process::getppid() else { return Ok(None) };
    if u32::try_from(parent.as_raw_nonzero().get()).ok() != Some(pid) {
        return Ok(None);
    }
    let pidfd = match pidfd_open(parent, PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Still the parent after the pidfd was opened: the pidfd is the supervisor's.
    Ok((rustix::process::getppid() == Some(parent)).then_some(pidfd))
}

/// The drain the supervisor would have run: the program (the leader of `group`) has the drain
/// timeout; once it exited the rest of the group gets `stop`; at the end of the timeout what
/// is left of the group is killed.
fn drain_without_supervisor(group: Pid, stop: Signal, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now().checked_add(timeout);
    // The leader keeps the group's id while the watchdog is a member of the group; if the
    // leader exited already the pidfd may be another process's, which only means the
    // watchdog waits for the deadline.
    let program = pidfd_open(group, PidfdFlags::empty()).ok();
    let mut program_exited = program.is_none();
    let mut group_stopped = false;
    loop {
        if program_exited && !group_stopped {
            rustix::process::kill_process_group(group, stop).ok();
            group_stopped = true;
        }
        if program_exited && !others_in_group(group)? {
            return Ok(());
        }
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|left| left.is_zero()) {
            // The watchdog is a member: this ends it too.
            rustix::process::kill_process_group(group, Signal::KILL)?;
            return Ok(());
        }
        let wait = if program_exited { Some(left.map_or(GROUP_CHECK, |l| l.min(GROUP_CHECK))) } else { left };
        match &program {
            Some(pidfd) if !program_exited => {
                program_exited = wait_readable(&[pidfd.as_fd()], wait)? == [true]
            }
            _ => std::thread::sleep(wait.unwrap_or(GROUP_CHECK)),
        }
    }
}

/// Whether a live process other than this one is in `group`.
fn others_in_group(group: Pid) -> io::Result<bool> {
    let me = rustix::process::getpid().as_raw_pid();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if super::leftovers::Stat::of(pid).is_some_and(|stat| stat.live_in(group.as_raw_pid())) {
            return Ok(true);
        }
    }
    Ok(false)
}
