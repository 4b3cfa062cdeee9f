//! What a coordination directory holds, read without disturbing its group.
//!
//! [`inspect`] reports the owner named in the owner file and whether it is alive, whether an
//! upgrade is in progress (the coordination lock is held), every upgrade socket with its state,
//! and anything else found in the directory. It is what `tableroll status` prints.
//!
//! Nothing is connected to, locked, created or removed. Connecting to an owner's upgrade
//! socket would start a handoff (the owner answers any connection by sending every
//! descriptor), and taking the lock would make a newcomer wait; so liveness is read from the
//! kernel's table of Unix sockets (`/proc/net/unix`), the lock from its table of file locks
//! (`/proc/locks`), and the processes behind sockets from `/proc/<pid>/fd`. Linux only.
//!
//! What the kernel shows depends on where the reader stands: a socket bound in another network
//! namespace is not in this namespace's table and reads as stale, a lock held by a process of
//! another PID namespace is left out of the lock table and reads as free, and the process
//! behind a socket is found only if this process may read its `/proc/<pid>/fd`.

mod journal;
mod listing;
mod lock;
mod owner_file;
mod picture;
mod sockets;
mod status;
#[cfg(test)]
mod tests;

use std::path::Path;

/// The name of the journal in a coordination directory (its previous part is `journal.1`): for
/// a reader that waits for it to change.
pub use crate::coordination::JOURNAL_FILE;
pub use journal::{read_journal, JournalEntry, JournalFollower, JournalRead};

pub use status::{
    DirectoryStatus, EntryKind, Handover, LockHeld, LockStatus, OwnerFile, OwnerStatus, RawName, SocketState,
    SocketStatus, UnexpectedEntry,
};

use crate::coordination::Directory;
use crate::error::{Error, Result};
use owner_file::read_owner_file;
use picture::Picture;

/// How many times the whole picture is read while it is not consistent (see [`inspect`]).
const PICTURE_READS: usize = 20;

/// Reports what the coordination directory `dir` holds, without disturbing its group: see the
/// [module docs](self) for what is read, and what the kernel may hide.
///
/// A missing, empty or invalid owner file, an unreadable lock table, stale sockets and
/// strange files are reported in the result, not as errors.
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if `dir` cannot be made absolute or listed (it does not
/// exist, is not a directory, or may not be read), or if the kernel's table of Unix sockets
/// (`/proc/net/unix`) cannot be read.
pub fn inspect(dir: impl AsRef<Path>) -> Result<DirectoryStatus> {
    let dir = Directory::at(dir.as_ref())?;
    let mut picture = Picture::read(&dir)?;
    for _ in 1..PICTURE_READS {
        if picture.is_consistent() {
            break;
        }
        // Let a newcomer that is running on this CPU finish writing the owner file.
        std::thread::yield_now();
        picture = Picture::read(&dir)?;
    }
    Ok(picture.status)
}

/// The id the owner file of the coordination directory `dir` names, read without the lock
/// (so it may be a moment old), or `None` if there is no owner file or it is empty. Whether
/// that process is alive is not checked: see [`inspect`] for that.
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) naming the path if `dir` cannot be made absolute, or the owner file is not a
/// regular file, cannot be read, or holds something that is not a valid id (an error of kind
/// `InvalidData`, saying why).
pub fn owner_id(dir: impl AsRef<Path>) -> Result<Option<String>> {
    let dir = Directory::at(dir.as_ref())?;
    let kind = match std::fs::symlink_metadata(dir.owner_file()) {
        Ok(meta) => Some(EntryKind::of(meta.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io_at("inspecting the owner file", dir.owner_file(), e)),
    };
    let read = read_owner_file(&dir, kind);
    match (read.file, read.id) {
        (_, Some(id)) => Ok(Some(String::from_utf8_lossy(&id).into_owned())),
        (OwnerFile::Missing | OwnerFile::Empty, None) => Ok(None),
        (_, None) => Err(Error::io_at(
            "reading the owner file",
            dir.owner_file(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, read.problem.unwrap_or_default()),
        )),
    }
}
