//! The owner file `<dir>/pid`: the current owner's id, and the `flock(2)` every process takes
//! before reading it and holds until its ready finished or its attempt failed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::id::{self, MAX_SOCKET_PATH};

/// The open, exclusively locked owner file. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    file: File,
    path: PathBuf,
}

impl OwnerLock {
    /// Opens (creating, never truncating, never following a symlink) and locks the owner file.
    ///
    /// Waiting is a blocking `flock`, woken by the kernel the moment the holder releases it:
    /// no polling delay. With a deadline, the wait runs on a helper thread that owns a duplicate
    /// of the descriptor; if the deadline passes first, the helper releases the lock as soon as
    /// it gets it, by closing that duplicate.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the file cannot be opened or created (it is a symlink,
    /// a directory, or not accessible), is not a regular file, or cannot be locked; also if the
    /// helper thread for a bounded wait cannot be spawned. [`Error::Timeout`] if `deadline`
    /// passes before the lock is free.
    pub(crate) fn acquire(path: &Path, deadline: Option<Instant>) -> Result<OwnerLock> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(path)
            .map_err(|e| {
                Error::io_at("opening the owner file (it must be a regular file, not a symlink)", path, e)
            })?;
        let meta = file.metadata().map_err(|e| Error::io_at("inspecting the owner file", path, e))?;
        if !meta.is_file() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            return Err(Error::io_at("opening the owner file", path, e));
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                tracing::debug!(path = %path.display(), "waiting for the coordination lock");
                wait_for_lock(&file, path, deadline)?;
            }
            Err(e) => return Err(Error::io_at("locking the owner file", path, e.into())),
        }
        Ok(OwnerLock { file, path: path.to_owned() })
    }

    /// The current owner's id, or `None` if the file is empty.
    ///
    /// # Errors
    ///
    /// The content is not a valid id (it could name a path outside the directory, or is longer
    /// than any id can be): refused, never followed.
    pub(crate) fn read_owner(&self) -> Result<Option<Vec<u8>>> {
        read_id(&self.file, &self.path)
    }

    /// Records `id` as the owner, in place: the lock lives on this inode, so the file is never
    /// replaced by a rename.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if truncating or writing the file fails (the file system
    /// is full or read-only, say). The file may then be empty, which reads as "no owner".
    pub(crate) fn write_owner(&self, id: &[u8]) -> Result<()> {
        let io = |e| Error::io_at("writing the owner file", &self.path, e);
        self.file.set_len(0).map_err(io)?;
        self.file.write_all_at(id, 0).map_err(io)
    }
}

/// Reads the owner id without taking the lock (never following a symlink). Only for a
/// process that knows no one else can be writing it: see the upgrade server's step-down.
///
/// # Errors
///
/// [`Error::Io`] naming the path if the file cannot be opened (missing, a symlink, not
/// readable) or read; [`Error::Protocol`] if its content is not a valid id.
pub(crate) fn peek_owner(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|e| Error::io_at("opening the owner file", path, e))?;
    read_id(&file, path)
}

/// Reads the start of `file`: at most one byte more than any id can be, so a huge file costs
/// nothing and still reads as too long.
pub(crate) fn read_bounded(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_SOCKET_PATH + 1];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads an id from the start of `file`.
fn read_id(file: &File, path: &Path) -> Result<Option<Vec<u8>>> {
    let buf = read_bounded(file).map_err(|e| Error::io_at("reading the owner file", path, e))?;
    if buf.is_empty() {
        return Ok(None);
    }
    id::validate(&buf).map_err(|e| match e {
        Error::InvalidId { id, reason } => Error::Protocol(format!(
            "the owner file {} holds {id:?}, which is not a valid id ({reason})",
            path.display()
        )),
        other => other,
    })?;
    Ok(Some(buf))
}

impl Drop for OwnerLock {
    /// Unlocks explicitly rather than only by closing: a child forked meanwhile by another
    /// thread of the application shares this open file description, and would otherwise keep
    /// the lock until it execs (or forever, if it never does).
    fn drop(&mut self) {
        if let Err(e) = flock(&self.file, FlockOperation::Unlock) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not release the coordination lock");
        }
    }
}

fn wait_for_lock(file: &File, path: &Path, deadline: Option<Instant>) -> Result<()> {
    let lock_error = |e: Errno| Error::io_at("locking the owner file", path, e.into());
    let Some(deadline) = deadline else {
        return retry_intr(|| flock(file, FlockOperation::LockExclusive)).map_err(lock_error);
    };
    let shared: OwnedFd = file
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io_at("duplicating the owner file descriptor", path, e))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tableroll-lock-wait".into())
        .spawn(move || {
            let result = retry_intr(|| flock(&shared, FlockOperation::LockExclusive));
            // If nobody waits any more, dropping `shared` here (the last reference to the
            // open file description besides the caller's, already closed) releases the lock.
            let _ = tx.send(result);
        })
        .map_err(|e| Error::io("spawning the lock wait thread", e))?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(lock_error),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(Error::Timeout { operation: "waiting for the coordination lock" })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::io_at(
            "locking the owner file",
            path,
            io::Error::other("lock wait thread ended without an answer"),
        )),
    }
}

fn retry_intr(mut op: impl FnMut() -> rustix::io::Result<()>) -> rustix::io::Result<()> {
    loop {
        match op() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lock_excludes_and_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let first = OwnerLock::acquire(&path, None).unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let err = OwnerLock::acquire(&path, Some(deadline)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        drop(first);
        // The timed-out waiter's helper thread released what it got: the lock is free again.
        let _again = OwnerLock::acquire(&path, Some(Instant::now() + Duration::from_secs(10))).unwrap();
    }

    #[test]
    fn drop_unlocks_even_while_the_file_is_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let lock = OwnerLock::acquire(&path, None).unwrap();
        // A copy of the descriptor, as a child forked at this moment would hold.
        let shared = lock.file.try_clone().unwrap();
        drop(lock);
        let again = OwnerLock::acquire(&path, Some(Instant::now()));
        assert!(again.is_ok(), "the lock outlived its OwnerLock");
        drop(shared);
    }

    #[test]
    fn waiter_wakes_when_holder_releases() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let first = OwnerLock::acquire(&path, None).unwrap();
        let p = path.clone();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            OwnerLock::acquire(&p, Some(Instant::now() + Duration::from_secs(30))).map(|_| ())
        });
        rx.recv().unwrap();
        drop(first);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn owner_id_round_trip_and_refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let lock = OwnerLock::acquire(&path, None).unwrap();
        assert_eq!(lock.read_owner().unwrap(), None);
        lock.write_owner(b"a-much-longer-id-than-the-next").unwrap();
        lock.write_owner(b"short").unwrap();
        assert_eq!(lock.read_owner().unwrap().as_deref(), Some(&b"short"[..]));
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
        for bad in [&b"../../etc/passwd"[..], b"..", b"a/b", &[b'x'; 4096]] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(lock.read_owner(), Err(Error::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn refuses_symlinked_or_special_owner_files() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        let path = tmp.path().join("pid");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(OwnerLock::acquire(&path, None).is_err());
        assert!(!target.exists(), "the symlink was followed");
        let dir_path = tmp.path().join("sub");
        std::fs::create_dir(&dir_path).unwrap();
        assert!(OwnerLock::acquire(&dir_path, None).is_err());
    }
}
