//! Noticing, within moments, that the owner file may have changed.
//!
//! An owner steps down when the owner file names another live process, so it must see every
//! write to that file soon after it lands, whoever makes it (our newcomer writes before it
//! closes its session, a Go newcomer after), and without sleeping between looks. The watch is an
//! inotify instance on the coordination directory that reports changes to `pid` (written,
//! truncated, closed after writing, created or moved in). Its descriptor becomes readable on
//! such an event, so the upgrade server waits on it in the same `poll(2)` as its sockets.
//!
//! Without inotify (the per-user limit on instances is reached, or the kernel lacks it), the
//! watch says so and the caller looks at the file on a short period instead.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::sys::inotify;

/// A watch on the owner file `<dir>/<name>`, or the fact that none could be set up.
#[derive(Debug)]
pub(crate) struct OwnerFileWatch {
    inotify: Option<OwnedFd>,
    name: &'static str,
}

impl OwnerFileWatch {
    /// Watches `dir` for changes to the file `name`. Never fails: without inotify the watch is
    /// [`unavailable`](Self::is_available) and the caller falls back to looking periodically.
    pub(crate) fn new(dir: &Path, name: &'static str) -> OwnerFileWatch {
        let inotify = match inotify::watch_dir(dir) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no inotify watch on the owner file (fs.inotify.max_user_instances reached?); looking at it periodically instead, so a step-down can come a few milliseconds later");
                None
            }
        };
        OwnerFileWatch { inotify, name }
    }

    /// Whether changes are reported through [`fd`](Self::fd).
    pub(crate) fn is_available(&self) -> bool {
        self.inotify.is_some()
    }

    /// The descriptor that becomes readable when the file may have changed.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(AsFd::as_fd)
    }

    /// Reads every queued event; returns whether any may concern the owner file (an event
    /// for it, or lost events). Without inotify: always `true`, the caller having been woken by
    /// its period.
    pub(crate) fn take_changes(&self) -> bool {
        match &self.inotify {
            Some(fd) => inotify::drain_mentions(fd, self.name.as_bytes()),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::poll::{ready_now, Interest};

    fn readable(watch: &OwnerFileWatch) -> bool {
        ready_now(watch.fd().unwrap(), Interest::Read).unwrap()
    }

    #[test]
    fn reports_writes_to_the_owner_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pid"), b"a").unwrap();
        let watch = OwnerFileWatch::new(tmp.path(), "pid");
        assert!(watch.is_available());
        assert!(!readable(&watch));
        std::fs::write(tmp.path().join("other"), b"x").unwrap();
        assert!(readable(&watch));
        assert!(!watch.take_changes(), "another file is not the owner file");
        assert!(!readable(&watch));
        std::fs::write(tmp.path().join("pid"), b"b").unwrap();
        assert!(readable(&watch));
        assert!(watch.take_changes());
        assert!(!readable(&watch), "all events were read");
    }
}
