//! The directory's entries, sorted into the owner file, upgrade sockets, standby marks and the
//! rest.

use super::sockets::SocketFile;
use super::status::{EntryKind, RawName, UnexpectedEntry};
use crate::coordination::{self, Directory, Entry};
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The directory's entries, sorted out.
pub(super) struct Listing {
    /// The kind of `pid`, if there is one.
    pub(super) owner_file_kind: Option<EntryKind>,
    pub(super) sockets: Vec<SocketFile>,
    /// The ids with a standby mark `<id>.standby` (a regular file) and an upgrade socket.
    pub(super) standby: HashSet<Vec<u8>>,
    pub(super) unexpected: Vec<UnexpectedEntry>,
}

impl Listing {
    pub(super) fn read(dir: &Directory) -> Result<Listing> {
        let dir = dir.path();
        let listing_error = |e| Error::io_at("listing the coordination directory", dir, e);
        let mut listing = Listing {
            owner_file_kind: None,
            sockets: Vec::new(),
            standby: HashSet::new(),
            unexpected: Vec::new(),
        };
        // Marks are sorted in once every socket is known: a mark without one is not the group's.
        let mut marks = Vec::new();
        for entry in fs::read_dir(dir).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(meta) => Some(meta),
                // Removed since it was listed (a stale socket swept by a new owner, say).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => None,
            };
            let name = entry.file_name();
            match (coordination::entry(name.as_bytes()), &meta) {
                (Entry::StandbyMark(_), Some(file)) if file.is_file() => marks.push((name, meta)),
                _ => listing.sort_in(name, meta.as_ref()),
            }
        }
        for (name, meta) in marks {
            match coordination::entry(name.as_bytes()) {
                Entry::StandbyMark(id) if listing.sockets.iter().any(|s| s.id == id) => {
                    listing.standby.insert(id.to_vec());
                }
                _ => listing.sort_in(name, meta.as_ref()),
            }
        }
        listing.sockets.sort_by(|a, b| a.id.cmp(&b.id));
        listing.unexpected.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn sort_in(&mut self, name: OsString, meta: Option<&fs::Metadata>) {
        let kind = meta.map_or(EntryKind::Unknown, |m| EntryKind::of(m.file_type()));
        let name = name.as_bytes();
        match (coordination::entry(name), meta) {
            (Entry::OwnerFile, _) => {
                self.owner_file_kind = Some(kind);
                if kind == EntryKind::RegularFile {
                    return;
                }
            }
            (Entry::Journal, _) if kind == EntryKind::RegularFile => return,
            (Entry::UpgradeSocket(id), Some(meta)) if kind == EntryKind::Socket => {
                self.sockets.push(SocketFile { id: id.to_vec(), device: meta.dev(), inode: meta.ino() });
                return;
            }
            _ => {}
        }
        self.unexpected.push(UnexpectedEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            name_raw: RawName::if_lossy(name),
            kind,
        });
    }
}
