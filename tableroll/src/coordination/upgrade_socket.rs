//! Each process's upgrade socket `<dir>/<id>.sock`: binding our own, connecting to the owner's.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::names::{standby_file_name, OWNER_FILE};
use super::owner_file::{open_read_only, read_settled};
use crate::error::{Error, Result};
use crate::sys::socket_table::{self, PathState};
use crate::sys::unix_socket::{bind_owner_only, connect_bounded};

/// Room for newcomers queued behind a session in progress.
const BACKLOG: i32 = 128;

/// This process's upgrade socket: a listening Unix socket bound to `<dir>/<id>.sock`, and the
/// one value that removes that path.
///
/// Dropping it closes the socket and unlinks the path, but only while the path is still this
/// socket's file (same device and inode as when it was bound): an id can be reused (two
/// alternating systemd instances, say), and the newer process's socket at the same path must
/// survive the older one's exit.
#[derive(Debug)]
pub(crate) struct UpgradeSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The device and inode of the socket file this process bound.
    file: (u64, u64),
}

impl UpgradeSocket {
    /// Binds and listens on `path`, owner-only (0600).
    ///
    /// A socket file left behind by a crashed process with the same id is replaced; a live one
    /// means the id is taken, and anything that is not a socket is left alone.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::IdInUse`](crate::ErrorKind::IdInUse) if a live process listens on `path`. [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if
    /// a file that is not a socket (or a symlink) is there, a stale socket cannot be removed,
    /// the socket cannot be inspected, or creating, binding or listening fails (the directory
    /// is not writable, say).
    pub(crate) fn bind(path: &Path, id: &str) -> Result<UpgradeSocket> {
        let listener = bind_upgrade_socket(path, id)?;
        let file = match std::fs::symlink_metadata(path) {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(e) => {
                // Not ours to remove: we cannot tell it is.
                return Err(Error::io_at("inspecting the upgrade socket", path, e));
            }
        };
        Ok(UpgradeSocket { listener, path: path.to_owned(), file })
    }

    pub(crate) fn listener(&self) -> &UnixListener {
        &self.listener
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the path is still the one this process bound.
    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file)
    }

    /// Removes the path if it is still this socket's file; the socket stays open, unreachable.
    pub(crate) fn unlink(&self) {
        if !self.still_ours() {
            tracing::debug!(path = %self.path.display(), "the upgrade socket's path belongs to another process now; leaving it");
            return;
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the upgrade socket")
            }
            _ => {}
        }
    }
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// How long a process waits for a draining standby to give up the id it wants.
const YIELD_WAIT: Duration = Duration::from_secs(1);

/// Asks the process listening on `path` to give it up, if it is a standby of ours (its mark
/// `mark` is there) and not the owner the directory's owner file names: a draining standby
/// unlinks its socket and then closes the connection (see `server.rs`); one on probation, or
/// anything else, just closes it. Returns once the connection is closed, or after
/// [`YIELD_WAIT`].
fn ask_standby_to_yield(path: &Path, mark: &Path, owner_file: &Path, id: &str) {
    // Read as any reader of the owner file without the lock does: never blocking on a FIFO
    // put there, and settled if a writer is midway.
    let named = open_read_only(owner_file).and_then(|file| read_settled(&file));
    if !mark.is_file() || named.is_ok_and(|named| named == id.as_bytes()) {
        return;
    }
    let Ok(mut stream) = connect_bounded(path, Some(YIELD_WAIT)) else { return };
    tracing::info!(path = %path.display(), "asking the standby that holds this id to give it up");
    if stream.set_read_timeout(Some(YIELD_WAIT)).is_ok() {
        let _ = io::Read::read_to_end(&mut stream, &mut Vec::new());
    }
}

fn bind_upgrade_socket(path: &Path, id: &str) -> Result<UnixListener> {
    match bind_owner_only(path, BACKLOG) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        other => return other.map_err(|e| Error::io_at("binding the upgrade socket", path, e)),
    }
    let inspect =
        || socket_table::state(path).map_err(|e| Error::io_at("inspecting the upgrade socket", path, e));
    let mut state = inspect()?;
    if state == PathState::Live {
        if let Some(dir) = path.parent() {
            let mark = dir.join(OsString::from_vec(standby_file_name(id.as_bytes())));
            ask_standby_to_yield(path, &mark, &dir.join(OWNER_FILE), id);
            state = inspect()?;
        }
    }
    match state {
        PathState::Live => return Err(Error::id_in_use(id, path)),
        PathState::NotASocket => {
            let e = io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket (or a symlink) is in the way",
            );
            return Err(Error::io_at("binding the upgrade socket", path, e));
        }
        PathState::Stale => {
            tracing::debug!(path = %path.display(), "replacing the stale upgrade socket of a previous process with this id");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io_at("removing a stale upgrade socket", path, e))
                }
                _ => {}
            }
        }
        PathState::Missing => {}
    }
    bind_owner_only(path, BACKLOG).map_err(|e| Error::io_at("binding the upgrade socket", path, e))
}

/// Connects to the owner's upgrade socket; `Ok(None)` when the owner is gone (no socket file,
/// or nobody listening on it: it crashed).
///
/// A connect to a Unix socket whose backlog is full blocks; the send timeout, which the kernel
/// applies to that wait, bounds it by the deadline.
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if something other than a socket is there (a symlink is not
/// followed), it cannot be inspected, or connecting fails for another reason than the owner
/// being gone (permission denied, say). [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if the owner's listen backlog stays
/// full until `deadline`.
pub(crate) fn connect_to_owner(path: &Path, deadline: Option<Instant>) -> Result<Option<UnixStream>> {
    let fail = |e: io::Error| Error::io_at("connecting to the owner's upgrade socket", path, e);
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a socket (refusing to follow it)",
        )));
    }
    let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match connect_bounded(path, timeout) {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(Error::timeout("connecting to the owner (its backlog is full)"))
        }
        Err(e) => Err(fail(e)),
    }
}

/// Accepts one connection on a non-blocking upgrade socket; `None` when there was none after
/// all (the newcomer gave up between connect and accept, say).
///
/// # Errors
///
/// `accept(2)`'s other errors: out of descriptors or memory, say.
pub(crate) fn accept_one(listener: &UnixListener) -> io::Result<Option<UnixStream>> {
    match listener.accept() {
        Ok((stream, _)) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn socket_is_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.sock");
        let _l = UpgradeSocket::bind(&path, "a").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn replaces_stale_refuses_live_and_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.sock");
        drop(UnixListener::bind(&path).unwrap());
        let live = UpgradeSocket::bind(&path, "a").unwrap();
        assert!(matches!(
            (UpgradeSocket::bind(&path, "a")).map_err(|e| e.kind()),
            Err(crate::ErrorKind::IdInUse)
        ));
        drop(live);
        assert!(!path.exists(), "dropping the socket removes its own path");
        let file = tmp.path().join("f.sock");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(UpgradeSocket::bind(&file, "f").is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn a_reused_id_keeps_the_newer_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blue.sock");
        let first = UpgradeSocket::bind(&path, "blue").unwrap();
        // The first process stops serving upgrades but lives on (draining): its socket file is
        // removed, and a second process with the same id binds the path again.
        std::fs::remove_file(&path).unwrap();
        let second = UpgradeSocket::bind(&path, "blue").unwrap();
        drop(first);
        assert!(path.exists(), "the older process removed the newer one's socket");
        assert!(connect_to_owner(&path, None).unwrap().is_some());
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn connect_treats_dead_owners_as_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("o.sock");
        assert!(connect_to_owner(&path, None).unwrap().is_none());
        drop(UnixListener::bind(&path).unwrap());
        assert!(connect_to_owner(&path, None).unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
        let _l = UnixListener::bind(&path).unwrap();
        assert!(connect_to_owner(&path, None).unwrap().is_some());
        let link = tmp.path().join("l.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(connect_to_owner(&link, None).is_err());
    }

    #[test]
    fn connect_to_a_full_backlog_respects_the_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("o.sock");
        let sock = std::os::unix::net::UnixListener::bind(&path).unwrap();
        rustix::net::listen(&sock, 0).unwrap();
        // Fill the backlog (nobody accepts), then one more connect must give up in time.
        let mut queued = Vec::new();
        let err = loop {
            match connect_to_owner(&path, Some(Instant::now() + std::time::Duration::from_millis(20))) {
                Ok(Some(conn)) if queued.len() < 64 => queued.push(conn),
                Ok(_) => panic!("the backlog never filled"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err.kind(), crate::ErrorKind::Timeout), "{err}");
    }
}
