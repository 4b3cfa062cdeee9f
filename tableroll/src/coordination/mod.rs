//! The coordination directory: the owner file and lock, each process's upgrade socket, stale
//! socket cleanup.
//!
//! This layer knows nothing of descriptors being passed: it finds, binds, locks and cleans.

mod journal_file;
mod names;
mod owner_file;
mod owner_file_watch;
mod owner_watch;
mod standby_mark;
mod upgrade_socket;

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub(crate) use journal_file::JournalFile;
pub use names::JOURNAL_FILE;
pub(crate) use names::{entry, socket_file_name, Entry, JOURNAL_ROTATED, OWNER_FILE};
pub(crate) use owner_file::{open_read_only, read_bounded, read_settled, HeldLock, OwnerFile, OwnerLock};
pub(crate) use owner_file_watch::OwnerFileWatch;
pub(crate) use owner_watch::{OwnerWatch, GRACE};
pub(crate) use standby_mark::StandbyMark;
pub(crate) use upgrade_socket::{accept_one, connect_to_owner, UpgradeSocket};

use crate::error::{Error, Result};
use crate::id::{self, MAX_SOCKET_PATH};
use crate::sys::files::check_writable_dir;
use crate::sys::socket_table::{self, PathState};

/// A coordination directory that exists and that this process may write to.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    path: PathBuf,
}

impl Directory {
    /// Checks that `path` is a writable directory; creates nothing.
    ///
    /// The path is made absolute (without resolving symlinks) so that the socket paths this
    /// process binds can be found in the kernel's socket table by other processes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if it cannot be made absolute (it is empty, or the working
    /// directory is gone), does not exist or cannot be inspected, is not a directory, or this
    /// process may not create files in it (`access(2)` for write and search permission).
    pub(crate) fn open(path: &Path) -> Result<Directory> {
        let Directory { path } = Directory::at(path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::io_at("opening the coordination directory", &path, e))?;
        if !meta.is_dir() {
            let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(Error::io_at("opening the coordination directory", &path, e));
        }
        check_writable_dir(&path)
            .map_err(|e| Error::io_at("checking write access to the coordination directory", &path, e))?;
        Ok(Directory { path })
    }

    /// The directory at `path`, made absolute, for a reader: nothing is checked or created.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if it cannot be made absolute (it is empty, or the working
    /// directory is gone).
    pub(crate) fn at(path: &Path) -> Result<Directory> {
        let path = std::path::absolute(path)
            .map_err(|e| Error::io_at("resolving the coordination directory", path, e))?;
        Ok(Directory { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn owner_file(&self) -> PathBuf {
        self.path.join(OWNER_FILE)
    }

    /// The longest id whose socket path fits a socket address.
    pub(crate) fn max_id_len(&self) -> usize {
        // `<dir>` + `/` + id + `.sock`
        MAX_SOCKET_PATH.saturating_sub(self.path.as_os_str().len() + 1 + names::socket_suffix_len())
    }

    /// `<dir>/<id>.sock`, checked to be a valid id whose path fits a socket address.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidId`](crate::ErrorKind::InvalidId) if `id` is empty, holds `/` or NUL, is `.` or `..`, or is longer
    /// than 107 bytes; [`ErrorKind::PathTooLong`](crate::ErrorKind::PathTooLong) if the socket path is longer than a socket
    /// address holds.
    pub(crate) fn socket_path(&self, id: &[u8]) -> Result<PathBuf> {
        id::validate(id)?;
        let path = self.path.join(OsString::from_vec(socket_file_name(id)));
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(Error::path_too_long(path, len, MAX_SOCKET_PATH));
        }
        Ok(path)
    }

    /// Watches the owner file for changes; see [`OwnerFileWatch`].
    pub(crate) fn watch_owner_file(&self) -> OwnerFileWatch {
        OwnerFileWatch::new(&self.path, OWNER_FILE)
    }

    /// Whether `id` names a process whose upgrade socket is live: a member of the group that
    /// can serve. An id that cannot name a socket here is not.
    pub(crate) fn is_live(&self, id: &[u8]) -> bool {
        self.socket_path(id).is_ok_and(|path| matches!(socket_table::state(&path), Ok(PathState::Live)))
    }

    /// Removes the upgrade sockets of dead processes, and their standby marks, keeping those
    /// named in `keep`.
    ///
    /// Runs under the lock. Only sockets whose process is gone (see [`socket_table::states`])
    /// are removed; a live one, or anything that is not a socket, is left alone. A standby mark
    /// goes when its socket is stale or missing. The kernel's table of sockets is read a few
    /// times for the whole sweep, not for each socket.
    pub(crate) fn remove_stale_sockets(&self, keep: &[&[u8]]) {
        let Ok(entries) = std::fs::read_dir(&self.path) else { return };
        let mut sockets = Vec::new();
        let mut marks = Vec::new();
        for entry in entries.flatten() {
            match names::entry(entry.file_name().as_bytes()) {
                Entry::UpgradeSocket(id) if !keep.contains(&id) => sockets.push(entry.path()),
                Entry::StandbyMark(id) if !keep.contains(&id) => {
                    marks.push((entry.path(), self.path.join(OsString::from_vec(socket_file_name(id)))));
                }
                _ => {}
            }
        }
        let mark_sockets: Vec<PathBuf> = marks.iter().map(|(_, socket)| socket.clone()).collect();
        let states = socket_table::states(&[sockets.as_slice(), mark_sockets.as_slice()].concat());
        let (socket_states, mark_states) = states.split_at(sockets.len());
        for (path, state) in sockets.iter().zip(socket_states) {
            if let Ok(PathState::Stale) = state {
                remove_stale(path, "upgrade socket");
            }
        }
        for ((mark, _), state) in marks.iter().zip(mark_states) {
            if let Ok(PathState::Stale | PathState::Missing) = state {
                remove_stale(mark, "standby mark");
            }
        }
    }
}

fn remove_stale(path: &Path, what: &str) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed stale {what}"),
        Err(e) => tracing::debug!(path = %path.display(), error = %e, "could not remove stale {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_non_directory_paths_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = Directory::open(&missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(Directory::open(&file).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn socket_paths_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let ok = dir.socket_path(b"web-1").unwrap();
        assert!(ok.ends_with("web-1.sock"));
        let long = vec![b'a'; MAX_SOCKET_PATH - tmp.path().as_os_str().len()];
        assert!(matches!(dir.socket_path(&long).map_err(|e| e.kind()), Err(crate::ErrorKind::PathTooLong)));
        assert!(matches!(dir.socket_path(b"..").map_err(|e| e.kind()), Err(crate::ErrorKind::InvalidId)));
        assert!(matches!(
            (dir.socket_path(b"../../etc/x")).map_err(|e| e.kind()),
            Err(crate::ErrorKind::InvalidId)
        ));
    }

    #[test]
    fn max_id_len_matches_socket_path_check() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let max = dir.max_id_len();
        assert!(dir.socket_path(&vec![b'a'; max]).is_ok());
        assert!(dir.socket_path(&vec![b'a'; max + 1]).is_err());
    }

    #[test]
    fn sweeps_only_stale_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let live = std::os::unix::net::UnixListener::bind(dir.socket_path(b"live").unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.socket_path(b"dead").unwrap()).unwrap());
        drop(std::os::unix::net::UnixListener::bind(dir.socket_path(b"kept").unwrap()).unwrap());
        std::fs::write(tmp.path().join("file.sock"), b"").unwrap();
        for id in ["live", "dead", "kept", "gone"] {
            std::fs::write(tmp.path().join(format!("{id}.standby")), b"").unwrap();
        }
        dir.remove_stale_sockets(&[b"kept"]);
        assert!(tmp.path().join("live.standby").exists());
        assert!(!tmp.path().join("dead.standby").exists(), "the mark of a dead process goes");
        assert!(!tmp.path().join("gone.standby").exists(), "a mark without a socket goes");
        assert!(tmp.path().join("kept.standby").exists());
        assert!(dir.socket_path(b"live").unwrap().exists());
        assert!(!dir.socket_path(b"dead").unwrap().exists());
        assert!(dir.socket_path(b"kept").unwrap().exists());
        assert!(tmp.path().join("file.sock").exists());
        drop(live);
    }

    /// The stale sockets of `stale` crashed processes and one live socket, swept; returns how
    /// many times the sweep read the kernel's table of Unix sockets.
    fn table_reads_of_a_sweep(stale: usize) -> usize {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let live = std::os::unix::net::UnixListener::bind(dir.socket_path(b"live").unwrap()).unwrap();
        for i in 0..stale {
            let path = dir.socket_path(format!("dead-{i}").as_bytes()).unwrap();
            drop(std::os::unix::net::UnixListener::bind(path).unwrap());
        }
        let before = socket_table::table_reads();
        dir.remove_stale_sockets(&[]);
        let reads = socket_table::table_reads() - before;
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["live.sock"], "every stale socket removed, the live one kept");
        drop(live);
        reads
    }

    #[test]
    fn a_sweep_reads_the_socket_table_a_constant_number_of_times() {
        let (one, fifty) = (table_reads_of_a_sweep(1), table_reads_of_a_sweep(50));
        assert_eq!(one, fifty, "table reads for 1 stale socket vs 50");
        assert!((1..=3).contains(&fifty), "{fifty} table reads");
    }
}
