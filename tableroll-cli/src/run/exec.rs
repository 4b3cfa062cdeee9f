//! `tableroll exec-activated`: the last step before the program runs, in the program's own
//! process.
//!
//! Socket activation wants `LISTEN_PID` to be the program's pid, which the supervisor cannot
//! know before the process exists. So the supervisor starts this command instead: it runs in
//! the new process, takes ownership of the descriptors it inherited, moves the listeners to
//! descriptors 3, 4, ..., closes every other inherited descriptor, sets `LISTEN_PID` to its
//! own pid and replaces itself with the program, which keeps the pid. No fork-time code runs
//! in the supervisor.
//!
//! This is the command's one `unsafe` block: `take_inherited` turns inherited descriptor
//! numbers into `OwnedFd`s. Everything after it works on owned descriptors.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::{fcntl_dupfd_cloexec, fcntl_setfd, FdFlags};
use rustix::pipe::PipeFlags;

/// The first descriptor socket activation passes (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;

/// Arguments of the hidden `exec-activated` command.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The supervisor's pid: if it dies, the program gets the stop signal.
    #[arg(long)]
    pub parent: i32,
    /// The program's stop signal (a number), its parent-death signal.
    #[arg(long, default_value_t = 15)]
    pub stop_signal: i32,
    /// A descriptor to pass, in order (it becomes 3, the next 4, ...).
    #[arg(long = "fd")]
    pub fds: Vec<RawFd>,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: ExecArgs) -> ExitCode {
    let program = args.command[0].clone();
    // Held open through the exec: they are the program's.
    let _placed = match take_inherited().and_then(|inherited| place_descriptors(inherited, &args.fds)) {
        Ok(placed) => placed,
        Err(e) => {
            say(&format!("tableroll: cannot pass the listeners to {}: {e}", program.to_string_lossy()));
            return ExitCode::from(127);
        }
    };
    if let Err(e) = stop_with_parent(args.parent, args.stop_signal) {
        say(&format!("tableroll: {e}; not starting {}", program.to_string_lossy()));
        return ExitCode::from(127);
    }
    let pid = std::process::id();
    let e = Command::new(&program).args(&args.command[1..]).env("LISTEN_PID", pid.to_string()).exec();
    say(&format!("tableroll: cannot run {}: {e}", program.to_string_lossy()));
    // The shell's convention: 126 found but not executable, 127 not found.
    ExitCode::from(if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 })
}

/// Arranges for the stop signal when the supervisor dies (the death signal survives `exec`),
/// so an orphaned program does not go on holding the listeners, and a crashed supervisor's
/// program drains as under systemd (the drain watchdog bounds that drain). A supervisor already
/// gone by then is an error.
fn stop_with_parent(parent: i32, stop_signal: i32) -> io::Result<()> {
    let signal = rustix::process::Signal::from_named_raw(stop_signal)
        .ok_or_else(|| io::Error::other(format!("{stop_signal} is not a signal")))?;
    rustix::process::set_parent_process_death_signal(Some(signal))?;
    match rustix::process::getppid() {
        Some(pid) if pid.as_raw_pid() == parent => Ok(()),
        _ => Err(io::Error::other("the supervisor exited before the program started")),
    }
}

/// Writes `line` to stderr in one write, so it stays whole next to the supervisor's lines.
fn say(line: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), format!("{line}\n").as_bytes());
}

/// Makes the inherited `sources[i]` descriptor `FIRST_FD + i`, inheritable, and closes every
/// other inherited descriptor. The placed descriptors are returned: they must stay open, and be
/// dropped only if the program cannot be executed.
fn place_descriptors(inherited: Inherited, sources: &[RawFd]) -> io::Result<Vec<OwnedFd>> {
    let count = RawFd::try_from(sources.len()).map_err(|_| io::Error::other("too many descriptors"))?;
    let end = FIRST_FD + count;
    // First copies above the target range, so no move overwrites a source not moved yet.
    let mut copies = Vec::with_capacity(sources.len());
    for &fd in sources {
        let source = inherited
            .get(&fd)
            .ok_or_else(|| io::Error::other(format!("descriptor {fd} is not open or was not inherited")))?;
        copies.push(fcntl_dupfd_cloexec(source, end)?);
    }
    // Everything inherited is closed now, its sockets kept by the copies: nothing is left in
    // the target range, and nothing else reaches the program.
    drop(inherited);
    (FIRST_FD..end).zip(&copies).map(|(target, copy)| place(copy, target)).collect()
}

/// A copy of `copy` at descriptor `target`, inheritable. `target` must be free, and no lower
/// descriptor above it taken: the copy takes the lowest free number from `target` on.
fn place(copy: &OwnedFd, target: RawFd) -> io::Result<OwnedFd> {
    let placed = fcntl_dupfd_cloexec(copy, target)?;
    if placed.as_raw_fd() != target {
        return Err(io::Error::other(format!("descriptor {target} was taken while moving the listeners")));
    }
    fcntl_setfd(&placed, FdFlags::empty())?;
    Ok(placed)
}

/// The descriptors this process inherited through `exec`, by number, owned.
type Inherited = BTreeMap<RawFd, OwnedFd>;

/// Whether [`take_inherited`] ran in this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the descriptors this process inherited through `exec`: every descriptor
/// above stderr that is open and not close-on-exec. At most once per process: a second call
/// is an error, so no descriptor gets two owners.
#[allow(unsafe_code)]
fn take_inherited() -> io::Result<Inherited> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("the inherited descriptors were already taken"));
    }
    let mut owned = Inherited::new();
    for fd in listed_descriptors()? {
        if fd > 2 && inherited_open(fd)? {
            // SAFETY: `fd` is open and not close-on-exec. Every descriptor this process opens
            // is close-on-exec (std and rustix open with O_CLOEXEC), so `fd` came through
            // `exec` from the supervisor, and nothing in this process owns it: std owns only
            // 0 to 2, and this is the one place that takes inherited descriptors, once (TAKEN
            // above). It stays open until the `OwnedFd` closes it: this process is one thread
            // and nothing else closes descriptors it does not own.
            owned.insert(fd, unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Ok(owned)
}

/// The descriptor numbers listed in `/proc/self/fd`, read completely before any is looked at.
/// The list includes the descriptor the listing itself used, closed by the time it returns.
fn listed_descriptors() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// Whether `fd` is open and not close-on-exec, as `/proc/self/fdinfo` tells: read from there,
/// not with `fcntl`, so that no number is used as a descriptor before it is known to be one
/// and to have no owner.
pub(super) fn inherited_open(fd: RawFd) -> io::Result<bool> {
    let info = match std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) {
        Ok(info) => info,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let flags = open_flags(&info).ok_or_else(|| io::Error::other(format!("no flags in fdinfo of {fd}")))?;
    // pipe2 takes open's flags: this is the architecture's O_CLOEXEC.
    Ok(flags & PipeFlags::CLOEXEC.bits() == 0)
}

/// The `flags:` field of an fdinfo file (octal, with O_CLOEXEC set if the descriptor is
/// close-on-exec).
fn open_flags(fdinfo: &str) -> Option<u32> {
    let value = fdinfo.lines().find_map(|line| line.strip_prefix("flags:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fdinfo_flags_are_octal() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1234\n";
        assert_eq!(open_flags(info), Some(0o2000002));
        assert_eq!(open_flags("pos:\t0\n"), None);
        assert_eq!(open_flags("flags:\t9\n"), None);
    }

    #[test]
    fn only_open_descriptors_without_close_on_exec_count_as_inherited() {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).unwrap();
        assert!(!inherited_open(read.as_raw_fd()).unwrap());
        fcntl_setfd(read.as_fd(), FdFlags::empty()).unwrap();
        assert!(inherited_open(read.as_raw_fd()).unwrap());
        let number = write.as_raw_fd();
        drop(write);
        // Closed, or taken meanwhile by another test's thread, close-on-exec like all of std's.
        assert!(!inherited_open(number).unwrap());
    }
}
