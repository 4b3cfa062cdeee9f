//! The owner file `pid`: what it holds, read while a newcomer may be rewriting it.

use std::fs::File;
use std::io;

use std::path::Path;

use super::status::{EntryKind, OwnerFile};
use crate::coordination::read_bounded;
use crate::error::Error;
use crate::id;
use crate::sys::files::{open_nofollow, OpenMode};

/// The owner file's name, which is also the lock file.
pub(super) const OWNER_FILE: &str = "pid";
/// How many times the owner file is read while its content is not settled: a newcomer may be
/// in the middle of writing it, so a reader can catch it empty or half written.
const OWNER_READS: usize = 5;

/// The owner file's bytes, or `None` if it cannot be read (missing, not a regular file...).
pub(super) fn owner_file_bytes(dir: &Path) -> Option<Vec<u8>> {
    open_owner_file(&dir.join(OWNER_FILE)).and_then(|file| read_bounded(&file)).ok()
}

/// What the owner file says.
pub(super) struct OwnerRead {
    /// The owner's id, when valid.
    pub(super) id: Option<Vec<u8>>,
    pub(super) file: OwnerFile,
    /// Why it cannot be used, when invalid.
    pub(super) problem: Option<String>,
}

impl OwnerRead {
    fn without_id(file: OwnerFile) -> OwnerRead {
        OwnerRead { id: None, file, problem: None }
    }

    fn invalid(problem: String) -> OwnerRead {
        OwnerRead { id: None, file: OwnerFile::Invalid, problem: Some(problem) }
    }
}

/// Reads the owner file, whose directory entry is of `kind` (`None`: there is none).
pub(super) fn read_owner_file(dir: &Path, kind: Option<EntryKind>) -> OwnerRead {
    match kind {
        None => return OwnerRead::without_id(OwnerFile::Missing),
        Some(EntryKind::RegularFile) => {}
        Some(kind) => {
            return OwnerRead::invalid(format!("the owner file is {}, not a regular file", kind.described()))
        }
    }
    let content = match open_owner_file(&dir.join(OWNER_FILE)).and_then(|file| read_settled(&file)) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return OwnerRead::without_id(OwnerFile::Missing),
        Err(e) => return OwnerRead::invalid(format!("the owner file cannot be read: {e}")),
    };
    if content.is_empty() {
        return OwnerRead::without_id(OwnerFile::Empty);
    }
    match id::validate(&content) {
        Ok(()) => OwnerRead { id: Some(content), file: OwnerFile::Valid, problem: None },
        Err(Error::InvalidId { id, reason }) => {
            OwnerRead::invalid(format!("the owner file holds {id:?}, which is not a valid id ({reason})"))
        }
        Err(e) => OwnerRead::invalid(format!("the owner file holds an invalid id: {e}")),
    }
}

/// Opens the owner file for reading only: never through a symlink, and without blocking if
/// something other than a regular file was put there since it was listed (opening a named
/// pipe would wait for a writer).
pub(super) fn open_owner_file(path: &Path) -> io::Result<File> {
    open_nofollow(path, OpenMode::Read)
}

/// The owner file's content once two reads agree on something (or after [`OWNER_READS`]
/// reads): a writer in the middle of its write shows a mix of two ids (ours write in place,
/// then cut the file to length) or an empty file (Go tableroll truncates, then writes).
fn read_settled(file: &File) -> io::Result<Vec<u8>> {
    let mut last = read_bounded(file)?;
    for _ in 1..OWNER_READS {
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
