//! inotify on a directory: which files in it were written, truncated, closed, created or moved
//! in.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// A close-on-exec, non-blocking inotify instance watching `dir` for changes to the files in
/// it: writes and truncations, closes (after writing or not), creations and files moved in.
///
/// # Errors
///
/// No instance can be had (`EMFILE`: the per-user limit `fs.inotify.max_user_instances`), or
/// no watch (`ENOSPC`: `max_user_watches`), or `dir` is not a directory.
pub(crate) fn watch_dir(dir: &Path) -> io::Result<OwnedFd> {
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

/// Reads every event queued on `watch`; returns whether any was about the file `name`, or
/// events were lost (the queue overflowed), or reading failed: whether `name` may have
/// changed.
pub(crate) fn drain_mentions(watch: impl AsFd, name: &[u8]) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(watch.as_fd(), &mut buf);
    let mut mentioned = false;
    loop {
        match reader.next() {
            Ok(event) => {
                let about = event.file_name().is_some_and(|n| n.to_bytes() == name);
                mentioned |= about || event.events().contains(ReadFlags::QUEUE_OVERFLOW);
            }
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return mentioned,
            Err(_) => return true,
        }
    }
}
