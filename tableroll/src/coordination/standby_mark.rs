//! The standby mark `<dir>/<id>.standby`: a process of ours that is handing over, on probation,
//! or draining, and still holds the group's descriptors and serves them on its upgrade socket.
//!
//! A newcomer that finds the owner named in the owner file gone looks for these marks before it
//! starts with fresh descriptors: binding fresh would fail while a stepped-down process still
//! holds the listening sockets ("Address already in use"), and would lose the connections
//! queued in them. The mark is made when a handoff starts, before the newcomer can record
//! itself, so it is there by the time the new owner could die; it is removed when the handoff
//! fails and this process stays the owner, and when the process stops. A mark whose upgrade
//! socket is not live is stale and swept like a stale socket. Go processes neither make nor
//! read marks.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::SystemTime;

use super::names::{self, standby_file_name, Entry};
use super::Directory;
use crate::sys::files::{open_nofollow, OpenMode};

/// This process's mark, removed when dropped.
#[derive(Debug)]
pub(crate) struct StandbyMark {
    path: PathBuf,
}

impl StandbyMark {
    /// Makes (or renews: its time orders the marks) the mark of `id`. `None` if it cannot be
    /// made (the file system is full, say): this process then cannot be found as a standby,
    /// which is logged, and nothing else changes.
    pub(crate) fn make(dir: &Directory, id: &[u8]) -> Option<StandbyMark> {
        let path = dir.path().join(OsString::from_vec(standby_file_name(id)));
        // Never through a symlink put at the path; the time is set anew on an existing mark.
        let made = open_nofollow(&path, OpenMode::ReadWriteCreate { mode: 0o600 })
            .and_then(|file| file.set_modified(SystemTime::now()));
        match made {
            Ok(()) => Some(StandbyMark { path }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not mark this process as a standby; a newcomer that finds the new owner dead will not find it");
                None
            }
        }
    }

    /// Makes this process's mark in `slot` if it has none yet.
    pub(crate) fn ensure(slot: &mut Option<StandbyMark>, dir: &Directory, id: &[u8]) {
        if slot.is_none() {
            *slot = StandbyMark::make(dir, id);
        }
    }
}

impl Drop for StandbyMark {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "could not remove the standby mark");
        }
    }
}

impl Directory {
    /// The ids of the live standbys (their mark and a live upgrade socket), the most recently
    /// marked first, leaving out `except`.
    pub(crate) fn standbys(&self, except: &[&[u8]]) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.path()) else { return Vec::new() };
        let mut marked: Vec<(SystemTime, Vec<u8>)> = entries
            .flatten()
            .filter_map(|entry| match names::entry(entry.file_name().as_bytes()) {
                Entry::StandbyMark(id) if !except.contains(&id) => {
                    let at = entry.metadata().and_then(|m| m.modified()).ok()?;
                    Some((at, id.to_vec()))
                }
                _ => None,
            })
            .collect();
        marked.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        marked.into_iter().map(|(_, id)| id).filter(|id| self.is_live(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_symlink_at_the_mark_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let target = tmp.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("a.standby")).unwrap();
        assert!(StandbyMark::make(&dir, b"a").is_none());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn lists_live_marked_processes_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path()).unwrap();
        let _a = UnixListener::bind(dir.socket_path(b"a").unwrap()).unwrap();
        let _b = UnixListener::bind(dir.socket_path(b"b").unwrap()).unwrap();
        let _unmarked = UnixListener::bind(dir.socket_path(b"c").unwrap()).unwrap();
        drop(UnixListener::bind(dir.socket_path(b"dead").unwrap()).unwrap());
        let mark_a = StandbyMark::make(&dir, b"a").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options().write(true).open(&mark_a.path).unwrap().set_modified(old).unwrap();
        let mark_b = StandbyMark::make(&dir, b"b").unwrap();
        let _mark_dead = StandbyMark::make(&dir, b"dead").unwrap();
        assert_eq!(dir.standbys(&[]), [b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(dir.standbys(&[b"b"]), [b"a".to_vec()]);
        drop(mark_b);
        assert!(!tmp.path().join("b.standby").exists());
        assert_eq!(dir.standbys(&[]), [b"a".to_vec()]);
    }
}
