//! Whether someone holds the coordination lock, without ever taking it (see
//! `sys::lock_table`).

use std::io;

use super::status::{EntryKind, LockHeld, LockStatus};
use crate::coordination::Directory;
use crate::sys::lock_table::{flock_holder, LockTarget};

/// Whether the coordination lock on the owner file is held, and by whom.
pub(super) fn lock_status(dir: &Directory, owner_file_kind: Option<EntryKind>) -> LockStatus {
    let status = |held, holder_pid, problem| LockStatus { held, holder_pid, problem };
    if owner_file_kind.is_none() {
        // A newcomer creates the file before it locks it.
        return status(LockHeld::No, None, None);
    }
    let target = match LockTarget::at(&dir.owner_file()) {
        Ok(target) => target,
        // Gone since it was listed: nobody can be holding a lock on it now.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return status(LockHeld::No, None, None),
        Err(e) => {
            return status(LockHeld::Unknown, None, Some(format!("cannot inspect the owner file: {e}")))
        }
    };
    match flock_holder(&target) {
        Ok(Some(holder)) => status(LockHeld::Yes, holder.pid, None),
        Ok(None) => status(LockHeld::No, None, None),
        Err(e) => status(LockHeld::Unknown, None, Some(format!("cannot read /proc/locks: {e}"))),
    }
}
