//! The owner file `pid`: what it holds, read while a newcomer may be rewriting it.

use std::io;

use super::status::{EntryKind, OwnerFile};
use crate::coordination::{open_read_only, read_bounded, read_settled, Directory};
use crate::id;

/// The owner file's bytes, or `None` if it cannot be read (missing, not a regular file...).
pub(super) fn owner_file_bytes(dir: &Directory) -> Option<Vec<u8>> {
    open_read_only(&dir.owner_file()).and_then(|file| read_bounded(&file)).ok()
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
pub(super) fn read_owner_file(dir: &Directory, kind: Option<EntryKind>) -> OwnerRead {
    match kind {
        None => return OwnerRead::without_id(OwnerFile::Missing),
        Some(EntryKind::RegularFile) => {}
        Some(kind) => {
            return OwnerRead::invalid(format!("the owner file is {}, not a regular file", kind.described()))
        }
    }
    let content = match open_read_only(&dir.owner_file()).and_then(|file| read_settled(&file)) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return OwnerRead::without_id(OwnerFile::Missing),
        Err(e) => return OwnerRead::invalid(format!("the owner file cannot be read: {e}")),
    };
    if content.is_empty() {
        return OwnerRead::without_id(OwnerFile::Empty);
    }
    match id::invalid_reason(&content) {
        None => OwnerRead { id: Some(content), file: OwnerFile::Valid, problem: None },
        Some(reason) => OwnerRead::invalid(format!(
            "the owner file holds {:?}, which is not a valid id ({reason})",
            String::from_utf8_lossy(&content)
        )),
    }
}
