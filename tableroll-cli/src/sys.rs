//! The few system calls the command makes itself, in one place: the monotonic clock shared by
//! processes, the descriptor limit, waiting for readability, and a wake pipe.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on `CLOCK_MONOTONIC`. One clock for every process of the machine, so a time
/// taken in the demo server and one taken in the drill can be subtracted.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    let ns = i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    u64::try_from(ns).unwrap_or(0)
}

/// Raises the soft limit on open descriptors to the hard limit: a drill with `--fds 1000`
/// holds two copies of every listener per process, plus the store's.
pub fn raise_fd_limit() -> io::Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(());
    }
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).map_err(Into::into)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_pipe_wakes_every_waiter_for_good() {
        let mut pipe = WakePipe::new().unwrap();
        assert_eq!(wait_readable(&[pipe.read.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        pipe.wake();
        for _ in 0..2 {
            assert_eq!(wait_readable(&[pipe.read.as_fd()], None).unwrap(), [true]);
        }
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        assert!(now_ns() >= a && a > 0);
    }
}
