//! The few system calls the command makes itself, in one place: waiting for readability, a
//! wake pipe, watching a directory for changes (or for one file in it) and a process for its
//! exit. The monotonic clock shared by processes is the load's ([`now_ns`]), and so is
//! the descriptor limit ([`tableroll_load::raise_nofile_limit`]).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
/// Nanoseconds on `CLOCK_MONOTONIC`, one clock for every process of the machine: a time taken
/// in the demo server and one taken in the drill (or stamped on a request) can be subtracted.
pub use tableroll_load::now_ns;

/// Which of `fds` became readable (or hung up) within `timeout` (`None`: no limit). An empty
/// answer means the time ran out. Interrupted waits are resumed with the full timeout; the
/// callers use short timeouts or none.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let timeout = timeout.map(|t| Timespec::try_from(t).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 }));
    let mut polled: Vec<PollFd<'_>> =
        fds.iter().map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN | PollFlags::RDHUP)).collect();
    loop {
        match poll(&mut polled, timeout.as_ref()) {
            Ok(_) => return Ok(polled.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a connection between requests has anything to read: the peer closed it, reset it,
/// or sent something unasked. Either way it cannot carry the next request.
pub fn has_input(fd: BorrowedFd<'_>) -> bool {
    wait_readable(&[fd], Some(Duration::ZERO)).map_or(true, |ready| ready[0])
}

/// Makes the next close of `fd` send a reset instead of a normal close.
pub fn reset_on_close(fd: impl AsFd) -> io::Result<()> {
    rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO)).map_err(Into::into)
}

/// A pipe whose read end becomes readable, for good, when the write end is dropped: one
/// signal that any number of threads can wait on next to their own descriptors.
pub struct WakePipe {
    /// Stays readable once [`WakePipe::wake`] ran.
    pub read: OwnedFd,
    write: Option<OwnedFd>,
}

impl WakePipe {
    /// A new, not yet woken pipe (both ends close-on-exec).
    pub fn new() -> io::Result<WakePipe> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(WakePipe { read, write: Some(write) })
    }

    /// Wakes every waiter, now and later.
    pub fn wake(&mut self) {
        self.write.take();
    }
}

/// The exit of a process (not necessarily a child of this one): a pidfd, readable once the
/// process has exited.
pub struct ProcessExit {
    fd: OwnedFd,
}

impl ProcessExit {
    /// Watches process `pid`: `Ok(None)` if there is no such process. The pid must be of this
    /// PID namespace, and name the process meant (a pid freed and reused before this call
    /// names another).
    pub fn watch(pid: u32) -> io::Result<Option<ProcessExit>> {
        let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
        let Some(pid) = pid else { return Ok(None) };
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Ok(Some(ProcessExit { fd })),
            Err(rustix::io::Errno::SRCH) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for ProcessExit {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A directory watched (inotify) for changes to one file in it: written to, created, or moved
/// in or out; and for the directory itself going away.
///
/// The directory's own watch hears of its removal only once nothing holds it any more, and a
/// file open in it (the journal a follower reads) holds it. So its parent is watched too, for
/// the removal or move of an entry of the directory's name, and the path is then looked at.
pub struct FileWatch {
    /// A close-on-exec, non-blocking inotify instance with the watches.
    inotify: OwnedFd,
    name: Vec<u8>,
    /// The watch on the directory.
    dir_watch: i32,
    /// The directory's path, without symlinks, and its device and inode when the watch began.
    dir: PathBuf,
    identity: (u64, u64),
    /// The watch on the directory's parent and the directory's name in it, when one could be
    /// had (the parent may not be readable, say).
    parent_watch: Option<(i32, Vec<u8>)>,
}

/// What happened since the last [`FileWatch::changes`], in order of weight: a batch of events
/// says the weightiest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileChange {
    /// Nothing about the file.
    None,
    /// The file may have changed (or events were lost: the queue overflowed).
    Changed,
    /// The directory was removed, moved or unmounted: nothing more will be seen.
    DirectoryGone,
}

impl FileWatch {
    /// Watches the file `name` of `dir`, which need not exist yet.
    ///
    /// # Errors
    ///
    /// No inotify instance (`EMFILE`: `fs.inotify.max_user_instances`) or watch (`ENOSPC`:
    /// `max_user_watches`) can be had for the directory, or `dir` is not a directory.
    pub fn new(dir: &Path, name: &str) -> io::Result<FileWatch> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let events = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        let dir_watch = inotify::add_watch(&inotify, dir, events)?;
        let dir = std::fs::canonicalize(dir)?;
        let identity = identity(&dir)?;
        let parent_watch = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(dir_name)) => {
                let events = WatchFlags::DELETE | WatchFlags::MOVED_FROM | WatchFlags::ONLYDIR;
                inotify::add_watch(&inotify, parent, events)
                    .ok()
                    .map(|watch| (watch, dir_name.as_bytes().to_vec()))
            }
            _ => None,
        };
        Ok(FileWatch { inotify, name: name.as_bytes().to_vec(), dir_watch, dir, identity, parent_watch })
    }

    /// Readable when events are queued.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads every queued event; what they say about the file and the directory.
    ///
    /// # Errors
    ///
    /// Reading the events failed.
    pub fn changes(&self) -> io::Result<FileChange> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.inotify.as_fd(), &mut buf);
        let mut change = FileChange::None;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(change),
                Err(e) => return Err(e.into()),
            };
            let flags = event.events();
            let named = |name: &[u8]| event.file_name().is_some_and(|n| n.to_bytes() == name);
            let parent_event = self
                .parent_watch
                .as_ref()
                .is_some_and(|(watch, dir_name)| event.wd() == *watch && named(dir_name));
            let seen = if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                // Events were lost, the directory's own among them maybe.
                self.gone_or(FileChange::Changed)
            } else if event.wd() == self.dir_watch {
                let gone =
                    ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED | ReadFlags::UNMOUNT;
                if flags.intersects(gone) {
                    FileChange::DirectoryGone
                } else if named(&self.name) {
                    FileChange::Changed
                } else {
                    FileChange::None
                }
            } else if parent_event {
                self.gone_or(FileChange::None)
            } else {
                FileChange::None
            };
            change = change.max(seen);
        }
    }

    /// [`FileChange::DirectoryGone`] if the directory's path no longer names the directory
    /// watched (it was removed, moved away or replaced), else `otherwise`. A path that cannot be
    /// looked at for another reason is taken as still there.
    fn gone_or(&self, otherwise: FileChange) -> FileChange {
        let gone = match identity(&self.dir) {
            Ok(now) => now != self.identity,
            Err(e) => {
                e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
            }
        };
        if gone {
            FileChange::DirectoryGone
        } else {
            otherwise
        }
    }
}

/// The device and inode of what `path` names, symlinks not followed.
fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let metadata = std::fs::symlink_metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_exit_is_readable_once_the_process_exited() {
        let mut child =
            std::process::Command::new("cat").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let exit = ProcessExit::watch(child.id()).unwrap().expect("the child is alive");
        assert_eq!(wait_readable(&[exit.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        drop(child.stdin.take());
        assert_eq!(wait_readable(&[exit.as_fd()], None).unwrap(), [true]);
        child.wait().unwrap();
    }

    #[test]
    fn wake_pipe_wakes_every_waiter_for_good() {
        let mut pipe = WakePipe::new().unwrap();
        assert_eq!(wait_readable(&[pipe.read.as_fd()], Some(Duration::ZERO)).unwrap(), [false]);
        pipe.wake();
        for _ in 0..2 {
            assert_eq!(wait_readable(&[pipe.read.as_fd()], None).unwrap(), [true]);
        }
    }

    #[test]
    fn a_file_watch_sees_its_file_only_and_the_directory_going() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("group");
        std::fs::create_dir(&dir).unwrap();
        let watch = FileWatch::new(&dir, "journal").unwrap();
        assert_eq!(watch.changes().unwrap(), FileChange::None);
        std::fs::write(dir.join("other"), b"x").unwrap();
        assert_eq!(watch.changes().unwrap(), FileChange::None);
        std::fs::write(dir.join("journal"), b"x").unwrap();
        assert_eq!(wait_readable(&[watch.fd()], None).unwrap(), [true]);
        assert_eq!(watch.changes().unwrap(), FileChange::Changed);
        std::fs::rename(dir.join("journal"), dir.join("journal.1")).unwrap();
        assert_eq!(watch.changes().unwrap(), FileChange::Changed);
        std::fs::remove_dir_all(&dir).unwrap();
        // The directory's inode goes, and the event with it, only when its last descriptor
        // closes: a child that another test is starting holds a copy from its fork to its exec.
        let bound = Some(Duration::from_secs(30));
        assert_eq!(wait_readable(&[watch.fd()], bound).unwrap(), [true], "no event for the removal");
        assert_eq!(watch.changes().unwrap(), FileChange::DirectoryGone);
    }

    #[test]
    fn a_file_watch_sees_the_directory_go_while_a_file_in_it_is_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("group");
        let bound = Some(Duration::from_secs(30));
        for recreate in [false, true] {
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("journal"), b"x").unwrap();
            let watch = FileWatch::new(&dir, "journal").unwrap();
            // As a follower holds the journal: the directory's own watch hears nothing now.
            let open = std::fs::File::open(dir.join("journal")).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            if recreate {
                std::fs::create_dir(&dir).unwrap();
            }
            assert_eq!(wait_readable(&[watch.fd()], bound).unwrap(), [true], "no event for the removal");
            assert_eq!(watch.changes().unwrap(), FileChange::DirectoryGone, "recreated: {recreate}");
            drop(open);
            if recreate {
                std::fs::remove_dir(&dir).unwrap();
            }
        }
    }

    #[test]
    fn a_file_watch_ignores_its_siblings_in_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("group");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(tmp.path().join("group.old")).unwrap();
        let watch = FileWatch::new(&dir, "journal").unwrap();
        std::fs::remove_dir(tmp.path().join("group.old")).unwrap();
        std::fs::write(tmp.path().join("other"), b"x").unwrap();
        std::fs::rename(tmp.path().join("other"), tmp.path().join("moved")).unwrap();
        assert_eq!(watch.changes().unwrap(), FileChange::None);
    }
}
