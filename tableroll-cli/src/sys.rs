//! The few system calls the command makes itself, in one place: waiting for readability, a
//! wake pipe, watching a directory for changes and a process for its exit. The monotonic clock shared by processes is the load's ([`now_ns`]), and so is
//! the descriptor limit ([`tableroll_load::raise_nofile_limit`]).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
/// Nanoseconds on `CLOCK_MONOTONIC`, one clock for every process of the machine: a time taken
/// in the demo server and one taken in the drill (or stamped on a request) can be subtracted.
pub use tableroll_load::now_ns;

/// Which of `fds` became readable (or hung up) within `timeout` (`None`: no limit). An empty
/// answer means the time ran out. Interrupted waits are resumed with the full timeout; the
/// callers use short timeouts or none.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let timeout = timeout.map(|t| Timespec::try_from(t).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 }));
    let mut polled: Vec<PollFd<'_>> =
        fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN | PollFlags::RDHUP)).collect();
    loop {
        match poll(&mut polled, timeout.as_ref()) {
            Ok(_) => return Ok(polled.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a connection between requests has anything to read: the peer closed it, reset it,
/// or sent something unasked. Either way it cannot carry the next request.
pub fn has_input(fd: BorrowedFd<'_>) -> bool {
    wait_readable(&[fd], Some(Duration::ZERO)).map_or(true, |ready| ready[0])
}

/// Makes the next close of `fd` send a reset instead of a normal close.
pub fn reset_on_close(fd: impl AsFd) -> io::Result<()> {
    rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO)).map_err(Into::into)
}

/// A pipe whose read end becomes readable, for good, when the write end is dropped: one
/// signal that any number of threads can wait on next to their own descriptors.
pub struct WakePipe {
    /// Stays readable once [`WakePipe::wake`] ran.
    pub read: OwnedFd,
    write: Option<OwnedFd>,
}

impl WakePipe {
    /// A new, not yet woken pipe (both ends close-on-exec).
    pub fn new() -> io::Result<WakePipe> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(WakePipe { read, write: Some(write) })
    }

    /// Wakes every waiter, now and later.
    pub fn wake(&mut self) {
        self.write.take();
    }
}

/// Changes to the entries of a directory (files written, created, renamed, removed), as a
/// descriptor that is readable while some are unread.
pub struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watches `dir` from now on.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let changes = inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::CLOSE_WRITE;
        inotify::add_watch(&fd, dir, changes)?;
        Ok(DirWatch { fd })
    }

    /// Forgets the changes noticed so far: the descriptor is readable again at the next one.
    pub fn clear(&self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok((read, _)) if !read.is_empty() => continue,
                Ok(_) | Err(rustix::io::Errno::AGAIN) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for DirWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The exit of a process (not necessarily a child of this one): a pidfd, readable once the
/// process has exited.
pub struct ProcessExit {
    fd: OwnedFd,
}

impl ProcessExit {
    /// Watches process `pid`: `Ok(None)` if there is no such process. The pid must be of this
    /// PID namespace, and name the process meant (a pid freed and reused before this call
    /// names another).
    pub fn watch(pid: u32) -> io::Result<Option<ProcessExit>> {
        let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
        let Some(pid) = pid else { return Ok(None) };
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Ok(Some(ProcessExit { fd })),
            Err(rustix::io::Errno::SRCH) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for ProcessExit {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_watch_sees_a_file_written_once_per_clear() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        assert_eq!(wait_readable(&[watch.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        std::fs::write(dir.path().join("journal"), "line\n").unwrap();
        assert_eq!(wait_readable(&[watch.as_fd()], None).unwrap(), [true]);
        watch.clear().unwrap();
        assert_eq!(wait_readable(&[watch.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
    }

    #[test]
    fn a_process_exit_is_readable_once_the_process_exited() {
        let mut child =
            std::process::Command::new("cat").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let exit = ProcessExit::watch(child.id()).unwrap().expect("the child is alive");
        assert_eq!(wait_readable(&[exit.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        drop(child.stdin.take());
        assert_eq!(wait_readable(&[exit.as_fd()], None).unwrap(), [true]);
        child.wait().unwrap();
    }

    #[test]
    fn wake_pipe_wakes_every_waiter_for_good() {
        let mut pipe = WakePipe::new().unwrap();
        assert_eq!(wait_readable(&[pipe.read.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        pipe.wake();
        for _ in 0..2 {
            assert_eq!(wait_readable(&[pipe.read.as_fd()], None).unwrap(), [true]);
        }
    }
}
