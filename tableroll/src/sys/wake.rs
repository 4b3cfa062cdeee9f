//! Descriptors that wake a `poll(2)`: an eventfd that stays readable once set, and a pipe whose
//! read end turns readable (end of file) when its write end closes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};

/// A new eventfd, close-on-exec and non-blocking, not readable until [`set`].
///
/// # Errors
///
/// The process or the system is out of descriptors.
pub(crate) fn eventfd_unset() -> io::Result<OwnedFd> {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(Into::into)
}

/// Makes the eventfd readable (adds one to its counter); it stays so until someone reads it.
///
/// # Errors
///
/// The write failed for another reason than the counter being full (which is readable too).
pub(crate) fn set(eventfd: impl AsFd) -> io::Result<()> {
    loop {
        match rustix::io::write(eventfd.as_fd(), &1u64.to_ne_bytes()) {
            Err(Errno::INTR) => continue,
            Ok(_) | Err(Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A close-on-exec pipe: `(read end, write end)`.
///
/// # Errors
///
/// The process or the system is out of descriptors.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe_with(PipeFlags::CLOEXEC).map_err(Into::into)
}
