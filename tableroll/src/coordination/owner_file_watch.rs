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

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

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
        let inotify = match Self::set_up(dir) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no inotify watch on the owner file (fs.inotify.max_user_instances reached?); looking at it periodically instead, so a step-down can come a few milliseconds later");
                None
            }
        };
        OwnerFileWatch { inotify, name }
    }

    fn set_up(dir: &Path) -> rustix::io::Result<OwnedFd> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let events = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CLOSE_NOWRITE
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, dir, events)?;
        Ok(fd)
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
        let Some(fd) = &self.inotify else { return true };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut changed = false;
        loop {
            match reader.next() {
                Ok(event) => {
                    let ours = event.file_name().is_some_and(|name| name.to_bytes() == self.name.as_bytes());
                    changed |= ours || event.events().contains(ReadFlags::QUEUE_OVERFLOW);
                }
                Err(Errno::INTR) => continue,
                // WOULDBLOCK: nothing more queued. Anything else: say "changed" so the caller
                // looks at the file rather than miss a write.
                Err(Errno::WOULDBLOCK) => return changed,
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    fn readable(watch: &OwnerFileWatch) -> bool {
        let mut fds = [PollFd::from_borrowed_fd(watch.fd().unwrap(), PollFlags::IN)];
        poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap() > 0
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
