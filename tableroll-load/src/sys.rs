//! The system calls of the crate, in one place: the clock, the descriptor limit, and a poll.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on `CLOCK_MONOTONIC`. One clock for every process of the machine, so a time
/// taken in one process and one taken in another can be subtracted.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    let ns = i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    u64::try_from(ns).unwrap_or(0)
}

/// Raises this process's soft limit on open descriptors (`RLIMIT_NOFILE`, which children
/// inherit) to `want`, or to the hard limit if that is lower; never lowers it. `u64::MAX` asks
/// for the hard limit. Returns the soft limit now in force (`u64::MAX` for no limit), which the
/// caller compares with `want` if it needs that many.
///
/// # Errors
///
/// `setrlimit(2)` failed.
pub fn raise_nofile_limit(want: u64) -> io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (current, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX));
    let target = want.min(hard);
    if current >= target {
        return Ok(current);
    }
    let current = (target != u64::MAX).then_some(target);
    setrlimit(Resource::Nofile, Rlimit { current, maximum: limit.maximum })?;
    Ok(target)
}

/// Whether `fd` has something to read (or hung up) right now.
pub(crate) fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut polled = [PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::RDHUP)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    loop {
        match poll(&mut polled, Some(&now)) {
            Ok(_) => return !polled[0].revents().is_empty(),
            Err(rustix::io::Errno::INTR) => continue,
            // A descriptor that cannot be polled cannot carry a request either.
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        assert!(now_ns() >= a && a > 0);
    }

    #[test]
    fn the_limit_is_raised_never_lowered() {
        let before = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert_eq!(raise_nofile_limit(0).unwrap(), before);
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert_eq!(raise_nofile_limit(u64::MAX).unwrap(), hard);
        assert_eq!(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX), hard);
    }
}
