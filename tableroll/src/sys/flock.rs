//! `flock(2)`: the coordination lock, which Go tableroll processes take too (not `fcntl`
//! record locks: the two kinds do not see each other on Linux).

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// Takes the exclusive lock on `file` if it is free at once; `false` if another open file
/// description holds it.
///
/// # Errors
///
/// `flock` failed for another reason than the lock being held.
pub(crate) fn try_lock_exclusive(file: impl AsFd) -> io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes the exclusive lock on `file`, waiting (in the kernel, woken when it is released) for
/// as long as another holds it.
///
/// # Errors
///
/// `flock` failed (the file system does not support it, say).
pub(crate) fn lock_exclusive(file: impl AsFd) -> io::Result<()> {
    loop {
        match flock(file.as_fd(), FlockOperation::LockExclusive) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

/// Releases the lock held through `file`'s open file description.
///
/// # Errors
///
/// `flock` failed.
pub(crate) fn unlock(file: impl AsFd) -> io::Result<()> {
    flock(file, FlockOperation::Unlock).map_err(Into::into)
}
