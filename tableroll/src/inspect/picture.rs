//! One reading of the directory, and whether it is consistent.

use super::listing::Listing;
use super::lock::lock_status;
use super::owner_file::{owner_file_bytes, read_owner_file};
use super::sockets::socket_statuses;
use super::status::{
    DirectoryStatus, Handover, LockHeld, LockStatus, OwnerStatus, RawName, SocketState, SocketStatus,
};
use crate::coordination::Directory;
use crate::error::Result;

/// One reading of the directory, between two reads of the owner file.
///
/// The parts are read one after the other while the group may be handing over, so a reading
/// can mix moments: the owner file naming the old owner and, read later, the socket table
/// without it (it stepped down once the file named the newcomer); or the file caught in the
/// middle of its rewrite. So the owner file is read before anything else and again after
/// everything else: when both reads agree, the file held that content for the whole reading,
/// and the owner it names was bound (a process binds its socket before it records itself)
/// before the directory was listed. A reading is taken as it is when the reads agree and the
/// owner is alive or the lock is free; otherwise a newcomer may be writing the file (it does so
/// holding the lock), and [`inspect`](super::inspect) reads again, a bounded number of times.
pub(super) struct Picture {
    pub(super) status: DirectoryStatus,
    /// Whether the owner file held the same bytes before and after the reading.
    file_unchanged: bool,
}

impl Picture {
    pub(super) fn read(dir: &Directory) -> Result<Picture> {
        let before = owner_file_bytes(dir);
        let listing = Listing::read(dir)?;
        let read = read_owner_file(dir, listing.owner_file_kind);
        let lock = lock_status(dir, listing.owner_file_kind);
        let sockets = socket_statuses(&listing.sockets, read.id.as_deref(), &listing.standby)?;
        let file_unchanged = owner_file_bytes(dir) == before;
        let owner_socket = sockets.iter().find(|s| s.owner);
        let owner = OwnerStatus {
            file: read.file,
            id: read.id.as_ref().map(|id| String::from_utf8_lossy(id).into_owned()),
            id_raw: read.id.as_deref().and_then(RawName::if_lossy),
            alive: owner_socket.is_some_and(|s| s.state == SocketState::Live),
            pid: owner_socket.and_then(|s| s.pid),
            problem: read.problem,
        };
        let handover = handover(&lock, &sockets);
        let status = DirectoryStatus {
            dir: dir.path().to_owned(),
            owner,
            lock,
            handover,
            sockets,
            unexpected: listing.unexpected,
        };
        Ok(Picture { status, file_unchanged })
    }

    pub(super) fn is_consistent(&self) -> bool {
        self.file_unchanged && (self.status.owner.alive || self.status.lock.held != LockHeld::Yes)
    }
}

/// The newcomer taking over: the holder of the lock, if it holds a live socket of the group.
fn handover(lock: &LockStatus, sockets: &[SocketStatus]) -> Option<Handover> {
    let holder = lock.holder_pid.filter(|_| lock.held == LockHeld::Yes)?;
    let socket =
        sockets.iter().find(|s| s.state == SocketState::Live && s.pid == Some(holder) && !s.owner)?;
    Some(Handover { id: socket.id.clone(), id_raw: socket.id_raw.clone(), pid: holder })
}
