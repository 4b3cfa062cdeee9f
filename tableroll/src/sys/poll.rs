//! Waiting for descriptors: `poll(2)`, with `EINTR` retried for the time left.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

/// What a descriptor is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Readable, or hung up, or in error (a listener with a connection, a pidfd whose process
    /// exited, the read end of a closed pipe…).
    Read,
    /// Writable, or hung up, or in error.
    Write,
}

/// Waits until one of `fds` is ready for its interest, or `timeout` passed (`None`: no limit).
/// Returns, for each descriptor, whether it is ready (all `false` after a timeout).
///
/// # Errors
///
/// `poll(2)` failed for another reason than an interruption (out of memory, say).
pub(crate) fn wait(fds: &[(BorrowedFd<'_>, Interest)], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, interest)| {
            let flags = match interest {
                Interest::Read => PollFlags::IN,
                Interest::Write => PollFlags::OUT,
            };
            PollFd::from_borrowed_fd(*fd, flags)
        })
        .collect();
    loop {
        let left = match (timeout, deadline) {
            (None, _) => None,
            (Some(_), Some(deadline)) => Some(timespec(deadline.saturating_duration_since(Instant::now()))),
            // A timeout too long to add to now: as good as none.
            (Some(_), None) => None,
        };
        match rustix::event::poll(&mut polled, left.as_ref()) {
            Ok(_) => return Ok(polled.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `fd` is ready for `interest` now, without waiting.
///
/// # Errors
///
/// As for [`wait`].
#[cfg(test)]
pub(crate) fn ready_now(fd: BorrowedFd<'_>, interest: Interest) -> io::Result<bool> {
    Ok(wait(&[(fd, interest)], Some(Duration::ZERO))?[0])
}

fn timespec(d: Duration) -> Timespec {
    Timespec::try_from(d).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 999_999_999 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn tells_which_descriptor_is_ready_and_times_out() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let both = [(a.as_fd(), Interest::Read), (c.as_fd(), Interest::Read)];
        assert_eq!(wait(&both, Some(Duration::from_millis(1))).unwrap(), [false, false]);
        b.write_all(b"x").unwrap();
        assert_eq!(wait(&both, None).unwrap(), [true, false]);
        assert!(ready_now(c.as_fd(), Interest::Write).unwrap());
    }
}
