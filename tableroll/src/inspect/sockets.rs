//! The upgrade sockets `<id>.sock`: their names, and whether a process still has each one.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::status::{RawName, SocketState, SocketStatus};
use crate::coordination::socket_file_name;
use crate::error::{Error, Result};
use crate::sys::socket_table::{self, UnconnectedSocket};

/// A socket file named `<id>.sock` and the identity of that file.
pub(super) struct SocketFile {
    pub(super) id: Vec<u8>,
    pub(super) device: u64,
    pub(super) inode: u64,
}

/// The state of every upgrade socket, and the process behind each live one.
pub(super) fn socket_statuses(
    files: &[SocketFile],
    owner: Option<&[u8]>,
    standby: &HashSet<Vec<u8>>,
) -> Result<Vec<SocketStatus>> {
    let names: Vec<Vec<u8>> = files.iter().map(|f| socket_file_name(&f.id)).collect();
    let wanted: HashSet<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let listed = socket_table::unconnected_sockets_named(&wanted)
        .map_err(|e| Error::io_at("reading the kernel's table of Unix sockets", "/proc/net/unix", e))?;
    let inodes: Vec<Option<u64>> =
        files.iter().zip(&names).map(|(file, name)| listed_inode(file, name, &listed)).collect();
    let live: HashSet<u64> = inodes.iter().flatten().copied().collect();
    let holders: HashMap<u64, u32> =
        if live.is_empty() { HashMap::new() } else { socket_table::socket_holders(&live) };
    Ok(files
        .iter()
        .zip(inodes)
        .map(|(file, inode)| SocketStatus {
            id: String::from_utf8_lossy(&file.id).into_owned(),
            id_raw: RawName::if_lossy(&file.id),
            state: if inode.is_some() { SocketState::Live } else { SocketState::Stale },
            pid: inode.and_then(|inode| holders.get(&inode).copied()),
            owner: owner == Some(file.id.as_slice()),
            standby: standby.contains(&file.id),
        })
        .collect())
}

/// The socket inode of the listed socket bound to this very file, if any.
///
/// The table holds paths as their processes bound them, which may name the directory
/// differently (through a symlink, say): a listed path counts if it leads to the same file.
fn listed_inode(file: &SocketFile, name: &[u8], listed: &[UnconnectedSocket]) -> Option<u64> {
    listed
        .iter()
        .filter(|socket| socket.path.strip_suffix(name).is_some_and(|parent| parent.ends_with(b"/")))
        .find(|socket| {
            let path = Path::new(OsStr::from_bytes(&socket.path));
            fs::symlink_metadata(path).is_ok_and(|m| m.dev() == file.device && m.ino() == file.inode)
        })
        .map(|socket| socket.inode)
}
