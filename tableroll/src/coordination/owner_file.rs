//! The owner file `<dir>/pid`: the current owner's id, and the `flock(2)` every process takes
//! before reading it and holds until its ready finished or its attempt failed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::{self, MAX_SOCKET_PATH};
use crate::sys::files::{open_nofollow, OpenMode};
use crate::sys::flock;
use crate::sys::lock_table::{flock_holder, LockTarget};

/// The owner file, open for reading and writing (created if missing, never truncated on
/// open, never through a symlink). Reading it without the lock is for a process that only
/// watches it; changing it takes the lock.
#[derive(Debug)]
pub(crate) struct OwnerFile {
    file: File,
    path: PathBuf,
}

impl OwnerFile {
    /// Opens (creating, never truncating, never following a symlink) the owner file.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if the file cannot be opened or created (it is a symlink,
    /// a directory, or not accessible) or is not a regular file.
    pub(crate) fn open(path: &Path) -> Result<OwnerFile> {
        let file = open_nofollow(path, OpenMode::ReadWriteCreate { mode: 0o600 }).map_err(|e| {
            Error::io_at("opening the owner file (it must be a regular file, not a symlink)", path, e)
        })?;
        Ok(OwnerFile { file, path: path.to_owned() })
    }

    /// Takes the lock, waiting for it (see [`OwnerLock::acquire`]).
    ///
    /// # Errors
    ///
    /// As for [`OwnerLock::acquire`].
    pub(crate) fn lock(self, deadline: Option<Instant>) -> Result<OwnerLock> {
        match flock::try_lock_exclusive(&self.file) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(path = %self.path.display(), "waiting for the coordination lock");
                wait_for_lock(&self.file, &self.path, deadline)?;
            }
            Err(e) => return Err(Error::io_at("locking the owner file", &self.path, e)),
        }
        Ok(OwnerLock { owner_file: self })
    }

    /// Takes the lock if it is free at once; `None` if another process holds it. Never waits:
    /// a process that others may be waiting on must not wait for the lock itself.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if `flock` fails for another reason than the lock being
    /// held.
    pub(crate) fn try_lock(&self) -> Result<Option<HeldLock<'_>>> {
        match flock::try_lock_exclusive(&self.file) {
            Ok(true) => Ok(Some(HeldLock { owner_file: self })),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::io_at("locking the owner file", &self.path, e)),
        }
    }

    /// The pid of the process holding the lock, as the kernel's table of locks shows it;
    /// `None` if nobody holds it, or the holder cannot be named from this PID namespace, or the
    /// table cannot be read. The lock is never taken for this.
    pub(crate) fn lock_holder(&self) -> Option<u32> {
        let target = LockTarget::at(&self.path).ok()?;
        flock_holder(&target).ok()??.pid
    }

    /// The id the file names now, or `None` if it is empty.
    ///
    /// Without the lock, a reader may catch a write half done; see [`OwnerFile::write`] for
    /// what it can see then (and a Go writer truncates first, so also an empty file).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if reading fails; [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) if the content is not a valid id (it
    /// could name a path outside the directory, or is longer than any id can be): refused,
    /// never followed.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>> {
        read_id(&self.file, &self.path)
    }

    /// Records `id` as the owner: written in place over the old content, then the file cut to
    /// its length. The file is never empty on the way (an empty file means "no owner"), and
    /// never replaced by a rename (the lock lives on this inode, which Go processes share). A
    /// writer that fails or dies in between may leave `id` followed by the tail of the old
    /// content: an id that names no live socket, which readers take as "no owner".
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if writing or truncating fails (the file system is full,
    /// the file size limit is reached, the disk fails). The file then holds its old content or
    /// a mix as described, never `id` alone.
    fn write(&self, id: &[u8]) -> Result<()> {
        let fail = |e| Error::io_at("writing the owner file", &self.path, e);
        self.file.write_all_at(id, 0).map_err(fail)?;
        let len = u64::try_from(id.len()).map_err(|e| fail(io::Error::other(e)))?;
        self.file.set_len(len).map_err(fail)
    }

    fn unlock(&self) {
        if let Err(e) = flock::unlock(&self.file) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not release the coordination lock");
        }
    }
}

/// The owner file, locked by this process until dropped: a newcomer's, from joining to ready.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    owner_file: OwnerFile,
}

impl OwnerLock {
    /// Opens (see [`OwnerFile::open`]) and locks the owner file.
    ///
    /// Waiting is a blocking `flock`, woken by the kernel the moment the holder releases it:
    /// no polling delay. With a deadline, the wait runs on a helper thread that owns a duplicate
    /// of the descriptor; if the deadline passes first, the helper releases the lock as soon as
    /// it gets it, by closing that duplicate.
    ///
    /// # Errors
    ///
    /// As for [`OwnerFile::open`]; [`ErrorKind::Io`](crate::ErrorKind::Io) if the file cannot be locked, or the helper
    /// thread for a bounded wait cannot be spawned. [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if `deadline` passes
    /// before the lock is free.
    pub(crate) fn acquire(path: &Path, deadline: Option<Instant>) -> Result<OwnerLock> {
        OwnerFile::open(path)?.lock(deadline)
    }

    /// The current owner's id, or `None` if the file is empty.
    ///
    /// # Errors
    ///
    /// As for [`OwnerFile::read`].
    pub(crate) fn read_owner(&self) -> Result<Option<Vec<u8>>> {
        self.owner_file.read()
    }

    /// Records `id` as the owner; see [`OwnerFile::write`].
    ///
    /// # Errors
    ///
    /// As for [`OwnerFile::write`].
    pub(crate) fn write_owner(&self, id: &[u8]) -> Result<()> {
        self.owner_file.write(id)
    }
}

impl Drop for OwnerLock {
    /// Unlocks explicitly rather than only by closing: a child forked meanwhile by another
    /// thread of the application shares this open file description, and would otherwise keep
    /// the lock until it execs (or forever, if it never does).
    fn drop(&mut self) {
        self.owner_file.unlock();
    }
}

/// The lock taken with [`OwnerFile::try_lock`], released on drop.
#[derive(Debug)]
pub(crate) struct HeldLock<'f> {
    owner_file: &'f OwnerFile,
}

impl HeldLock<'_> {
    /// As [`OwnerFile::read`], with nobody else writing meanwhile.
    ///
    /// # Errors
    ///
    /// As for [`OwnerFile::read`].
    pub(crate) fn read_owner(&self) -> Result<Option<Vec<u8>>> {
        self.owner_file.read()
    }

    /// Records `id` as the owner; see [`OwnerFile::write`].
    ///
    /// # Errors
    ///
    /// As for [`OwnerFile::write`].
    pub(crate) fn write_owner(&self, id: &[u8]) -> Result<()> {
        self.owner_file.write(id)
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        self.owner_file.unlock();
    }
}

/// Opens the owner file for reading only, for a process that must not create it: never
/// through a symlink, and without blocking if something other than a regular file was put
/// there (opening a named pipe would wait for a writer).
///
/// # Errors
///
/// It cannot be opened (`NotFound` if missing), or is not a regular file (`InvalidInput`).
pub(crate) fn open_read_only(path: &Path) -> io::Result<File> {
    open_nofollow(path, OpenMode::Read)
}

/// How many times [`read_settled`] reads while the content is not settled.
const SETTLE_READS: usize = 5;

/// The owner file's content, read without the lock, once two reads agree on something (or
/// after a few reads): a writer in the middle of its write shows a mix of two ids (ours write
/// in place, then cut the file to length) or an empty file (Go tableroll truncates, then
/// writes).
///
/// # Errors
///
/// Reading failed.
pub(crate) fn read_settled(file: &File) -> io::Result<Vec<u8>> {
    let mut last = read_bounded(file)?;
    for _ in 1..SETTLE_READS {
        // Let a writer that is running on this CPU finish its two system calls.
        std::thread::yield_now();
        let again = read_bounded(file)?;
        if again == last && !again.is_empty() {
            break;
        }
        last = again;
    }
    Ok(last)
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
    if let Some(reason) = id::invalid_reason(&buf) {
        return Err(Error::protocol(format!(
            "the owner file {} holds {:?}, which is not a valid id ({reason})",
            path.display(),
            String::from_utf8_lossy(&buf)
        )));
    }
    Ok(Some(buf))
}

fn wait_for_lock(file: &File, path: &Path, deadline: Option<Instant>) -> Result<()> {
    let lock_error = |e: io::Error| Error::io_at("locking the owner file", path, e);
    let Some(deadline) = deadline else {
        return flock::lock_exclusive(file).map_err(lock_error);
    };
    let shared: OwnedFd = file
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io_at("duplicating the owner file descriptor", path, e))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tableroll-lock-wait".into())
        .spawn(move || {
            let result = flock::lock_exclusive(&shared);
            // If nobody waits any more, dropping `shared` here (the last reference to the
            // open file description besides the caller's, already closed) releases the lock.
            let _ = tx.send(result);
        })
        .map_err(|e| Error::io("spawning the lock wait thread", e))?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(lock_error),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::timeout("waiting for the coordination lock")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::io_at(
            "locking the owner file",
            path,
            io::Error::other("lock wait thread ended without an answer"),
        )),
    }
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
        assert!(matches!(err.kind(), crate::ErrorKind::Timeout), "{err}");
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
        let shared = lock.owner_file.file.try_clone().unwrap();
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
            assert!(
                matches!(lock.read_owner().map_err(|e| e.kind()), Err(crate::ErrorKind::Protocol)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn try_lock_never_waits_and_releases_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let watcher = OwnerFile::open(&path).unwrap();
        let newcomer = OwnerLock::acquire(&path, None).unwrap();
        assert!(watcher.try_lock().unwrap().is_none(), "taken while another process holds it");
        drop(newcomer);
        let held = watcher.try_lock().unwrap().expect("free once released");
        held.write_owner(b"watcher").unwrap();
        assert!(OwnerLock::acquire(&path, Some(Instant::now())).is_err(), "not held after all");
        drop(held);
        let again = OwnerLock::acquire(&path, Some(Instant::now())).unwrap();
        assert_eq!(again.read_owner().unwrap().as_deref(), Some(&b"watcher"[..]));
    }

    #[test]
    fn a_write_goes_over_the_old_content_and_then_cuts_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let lock = OwnerLock::acquire(&path, None).unwrap();
        lock.write_owner(b"the-old-owner").unwrap();
        // A watcher reading between the two steps of the next write sees the new id followed
        // by the old tail, never an empty file.
        lock.owner_file.file.write_all_at(b"new", 0).unwrap();
        assert_eq!(lock.read_owner().unwrap().as_deref(), Some(&b"new-old-owner"[..]));
        lock.write_owner(b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        lock.write_owner(b"a-longer-one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a-longer-one");
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
