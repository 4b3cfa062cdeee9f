//! The directory's entries, sorted into the owner file, upgrade sockets and the rest.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::owner_file::OWNER_FILE;
use super::sockets::{upgrade_socket_id, SocketFile};
use super::status::{EntryKind, UnexpectedEntry};
use crate::error::{Error, Result};

/// The directory's entries, sorted out.
pub(super) struct Listing {
    /// The kind of `pid`, if there is one.
    pub(super) owner_file_kind: Option<EntryKind>,
    pub(super) sockets: Vec<SocketFile>,
    pub(super) unexpected: Vec<UnexpectedEntry>,
}

impl Listing {
    pub(super) fn read(dir: &Path) -> Result<Listing> {
        let listing_error = |e| Error::io_at("listing the coordination directory", dir, e);
        let mut listing = Listing { owner_file_kind: None, sockets: Vec::new(), unexpected: Vec::new() };
        for entry in fs::read_dir(dir).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(meta) => Some(meta),
                // Removed since it was listed (a stale socket swept by a new owner, say).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => None,
            };
            listing.sort_in(entry.file_name(), meta.as_ref());
        }
        listing.sockets.sort_by(|a, b| a.id.cmp(&b.id));
        listing.unexpected.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn sort_in(&mut self, name: OsString, meta: Option<&fs::Metadata>) {
        let kind = meta.map_or(EntryKind::Unknown, |m| EntryKind::of(m.file_type()));
        let name = name.as_bytes();
        if name == OWNER_FILE.as_bytes() {
            self.owner_file_kind = Some(kind);
            if kind == EntryKind::RegularFile {
                return;
            }
        } else if let (Some(id), Some(meta)) = (upgrade_socket_id(name), meta) {
            if kind == EntryKind::Socket {
                self.sockets.push(SocketFile { id: id.to_vec(), device: meta.dev(), inode: meta.ino() });
                return;
            }
        }
        self.unexpected.push(UnexpectedEntry { name: String::from_utf8_lossy(name).into_owned(), kind });
    }
}
