//! `tableroll exec-activated`: the last step before the program runs, in the program's own
//! process.
//!
//! Socket activation wants `LISTEN_PID` to be the program's pid, which the supervisor cannot
//! know before the process exists. So the supervisor starts this command instead: it runs in
//! the new process, moves the listeners to descriptors 3, 4, ..., marks every other descriptor
//! close-on-exec, sets `LISTEN_PID` to its own pid and replaces itself with the program, which
//! keeps the pid. No fork-time code runs in the supervisor.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use rustix::io::{fcntl_dupfd_cloexec, fcntl_getfd, fcntl_setfd, FdFlags};

/// The first descriptor socket activation passes (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;

/// Arguments of the hidden `exec-activated` command.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The supervisor's pid: if it dies, the program gets SIGTERM.
    #[arg(long)]
    pub parent: i32,
    /// A descriptor to pass, in order (it becomes 3, the next 4, ...).
    #[arg(long = "fd")]
    pub fds: Vec<RawFd>,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: ExecArgs) -> ExitCode {
    let program = args.command[0].clone();
    if let Err(e) = place_descriptors(&args.fds) {
        say(&format!("tableroll: cannot pass the listeners to {}: {e}", program.to_string_lossy()));
        return ExitCode::from(127);
    }
    if let Err(e) = stop_with_parent(args.parent) {
        say(&format!("tableroll: {e}; not starting {}", program.to_string_lossy()));
        return ExitCode::from(127);
    }
    let pid = std::process::id();
    let e = Command::new(&program).args(&args.command[1..]).env("LISTEN_PID", pid.to_string()).exec();
    say(&format!("tableroll: cannot run {}: {e}", program.to_string_lossy()));
    // The shell's convention: 126 found but not executable, 127 not found.
    ExitCode::from(if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 })
}

/// Arranges for SIGTERM when the supervisor dies (the death signal survives `exec`), so an
/// orphaned program does not go on holding the listeners, and a crashed supervisor's program
/// drains as under systemd. A supervisor already gone by then is an error.
fn stop_with_parent(parent: i32) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    match rustix::process::getppid() {
        Some(pid) if pid.as_raw_pid() == parent => Ok(()),
        _ => Err(io::Error::other("the supervisor exited before the program started")),
    }
}

/// Writes `line` to stderr in one write, so it stays whole next to the supervisor's lines.
fn say(line: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), format!("{line}\n").as_bytes());
}

/// Makes `sources[i]` descriptor `FIRST_FD + i`, inheritable, and every other descriptor above
/// stderr close-on-exec.
fn place_descriptors(sources: &[RawFd]) -> io::Result<()> {
    let count = RawFd::try_from(sources.len()).map_err(|_| io::Error::other("too many descriptors"))?;
    let end = FIRST_FD + count;
    // First copies above the target range, so no move overwrites a source not moved yet.
    let mut copies = Vec::with_capacity(sources.len());
    for &fd in sources {
        let source =
            borrow_open(fd)?.ok_or_else(|| io::Error::other(format!("descriptor {fd} is not open")))?;
        copies.push(fcntl_dupfd_cloexec(source, end)?);
    }
    for fd in open_descriptors()? {
        // The listing's own descriptor is in the list but closed by now: skip what is closed.
        let Some(open) = borrow_open(fd)? else { continue };
        if (FIRST_FD..end).contains(&fd) {
            close_raw(fd);
        } else if fd >= end {
            fcntl_setfd(open, fcntl_getfd(open)? | FdFlags::CLOEXEC)?;
        }
    }
    for (target, copy) in (FIRST_FD..end).zip(&copies) {
        // The range is free now, so the lowest free descriptor at or above `target` is it.
        let placed = fcntl_dupfd_cloexec(copy, target)?;
        if placed.as_raw_fd() != target {
            return Err(io::Error::other(format!(
                "descriptor {target} was taken while moving the listeners"
            )));
        }
        fcntl_setfd(&placed, FdFlags::empty())?;
        // Kept open through exec: it is the program's now.
        let _ = placed.into_raw_fd();
    }
    Ok(())
}

/// The descriptors open in this process, from `/proc/self/fd`, read completely before any is
/// touched. The list includes the descriptor the listing itself used, closed by the time it
/// returns.
fn open_descriptors() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// `fd` borrowed if it is open in this process.
fn borrow_open(fd: RawFd) -> io::Result<Option<BorrowedFd<'static>>> {
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: this process has one thread and nothing closes descriptors behind this code's
    // back, so a descriptor that fcntl finds open stays open while it is borrowed here (up to
    // the exec).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match fcntl_getfd(borrowed) {
        Ok(_) => Ok(Some(borrowed)),
        Err(rustix::io::Errno::BADF) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Closes a descriptor this process inherited and nothing in it uses.
fn close_raw(fd: RawFd) {
    // SAFETY: `fd` was listed open in /proc/self/fd, and no object in this process owns it:
    // the only descriptors this command opened are its copies, which are above the range
    // this is called for.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
