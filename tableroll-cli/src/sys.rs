//! The few system calls the command makes itself, in one place: waiting for readability, and a
//! wake pipe. The monotonic clock shared by processes is the load's ([`now_ns`]), and so is
//! the descriptor limit ([`tableroll_load::raise_nofile_limit`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
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
}
