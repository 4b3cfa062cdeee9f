//! Is anyone behind a Unix socket path? Answered without disturbing a live process.
//!
//! Connecting to a live upgrade socket is not free: its owner answers by sending every
//! descriptor. So the kernel's table of Unix sockets (`/proc/net/unix`) is read first: a path
//! listed there belongs to a socket that is still open, listening or about to (bound but not yet
//! listening: a newcomer between `bind` and `listen` is alive too). Only a path missing from the
//! table is probed with `connect(2)`, where a refusal is the expected answer; the probe covers
//! sockets the table cannot show (another network namespace, another mount namespace, a
//! relative path).
//!
//! For `tableroll status`, which must never connect, the table is also read for the inodes of
//! the listed sockets, and `/proc/<pid>/fd` for the processes that hold them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rustix::net::{connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// What stands at a socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathState {
    /// Nothing.
    Missing,
    /// A file that is not a socket (a planted regular file, a symlink, a directory).
    NotASocket,
    /// A socket file whose socket was closed: its process is gone. Safe to remove.
    Stale,
    /// A socket some process still has open.
    Live,
}

/// Looks at `path` as described in the module docs.
pub(crate) fn state(path: &Path) -> io::Result<PathState> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PathState::Missing),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(PathState::NotASocket);
    }
    if in_kernel_table(path) {
        return Ok(PathState::Live);
    }
    probe(path)
}

/// How many times the table is read before a path is taken to be missing from it.
///
/// The kernel produces the table a page at a time and resumes each page by position; sockets
/// created or closed meanwhile shift the positions, so one read can skip a live entry (seen in
/// about 2 reads of 1000 under heavy churn). A skip only ever hides a socket, so reading again
/// makes a false "missing" vanishingly rare; it costs nothing when the path is found, which is
/// the common case for a live socket.
const TABLE_READS: usize = 3;

/// Whether `path` (made absolute) is bound by an open socket in this network namespace.
fn in_kernel_table(path: &Path) -> bool {
    let Ok(absolute) = std::path::absolute(path) else { return false };
    let wanted = absolute.as_os_str().as_bytes();
    (0..TABLE_READS).any(|_| table_lists(wanted))
}

fn table_lists(wanted: &[u8]) -> bool {
    let Ok(table) = fs::File::open("/proc/net/unix") else { return false };
    io::BufReader::with_capacity(64 << 10, table)
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| table_path(&line) == Some(wanted))
}

/// The path column of one `/proc/net/unix` line: everything after the seventh field
/// (`Num RefCount Protocol Flags Type St Inode Path`). Paths may hold spaces.
fn table_path(line: &[u8]) -> Option<&[u8]> {
    table_fields(line).map(|(_, path)| path)
}

/// The seven leading fields of one `/proc/net/unix` line and its non-empty path column.
fn table_fields(line: &[u8]) -> Option<([&[u8]; 7], &[u8])> {
    let mut fields: [&[u8]; 7] = [&[]; 7];
    let mut rest = line;
    for field in &mut fields {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ')?;
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let path = &rest[1..];
    (!path.is_empty()).then_some((fields, path))
}

/// A socket of the kernel's table that is bound to a path and not connected: listening, or
/// bound and about to listen. (A connection accepted from a listener is listed under the
/// listener's path too, but it does not make the path answer: it is left out.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnconnectedSocket {
    /// The socket's inode in the kernel's socket file system, as `/proc/<pid>/fd/*` links
    /// name it (`socket:[inode]`); not the inode of the file at `path`.
    pub(crate) inode: u64,
    /// The path the socket was bound to, as its process named it.
    pub(crate) path: Vec<u8>,
}

/// `SS_UNCONNECTED` in the `St` column: listening sockets and bound ones that do not listen
/// yet. Accepted connections are `SS_CONNECTED`.
const UNCONNECTED: u8 = 1;

/// One `/proc/net/unix` line as an unconnected socket bound to a path; `None` for the
/// header, unnamed or connected sockets, and anything malformed.
fn unconnected_socket(line: &[u8]) -> Option<UnconnectedSocket> {
    let (fields, path) = table_fields(line)?;
    let state = u8::from_str_radix(std::str::from_utf8(fields[5]).ok()?, 16).ok()?;
    let inode = std::str::from_utf8(fields[6]).ok()?.parse().ok()?;
    (state == UNCONNECTED).then(|| UnconnectedSocket { inode, path: path.to_vec() })
}

/// The unconnected sockets of the kernel's table whose path ends in a file name of `names`.
///
/// Only the file name is compared: the same directory can be named by many paths (relative,
/// through a symlink), so which of them is the caller's is for the caller to tell (by the
/// file's identity, say). The table is read again, up to [`TABLE_READS`] times in all, while
/// a name is missing, since one read can skip a live entry; what the reads find is merged.
///
/// # Errors
///
/// `/proc/net/unix` cannot be opened or read.
pub(crate) fn unconnected_sockets_named(names: &HashSet<&[u8]>) -> io::Result<Vec<UnconnectedSocket>> {
    let mut found: Vec<UnconnectedSocket> = Vec::new();
    for _ in 0..TABLE_READS {
        for socket in read_unconnected_named(names)? {
            if !found.contains(&socket) {
                found.push(socket);
            }
        }
        let seen: HashSet<&[u8]> = found.iter().filter_map(|s| file_name(&s.path)).collect();
        if names.iter().all(|name| seen.contains(name)) {
            break;
        }
    }
    Ok(found)
}

fn read_unconnected_named(names: &HashSet<&[u8]>) -> io::Result<Vec<UnconnectedSocket>> {
    let table = fs::File::open("/proc/net/unix")?;
    let mut found = Vec::new();
    for line in io::BufReader::with_capacity(64 << 10, table).split(b'\n') {
        let Some(socket) = unconnected_socket(&line?) else { continue };
        if file_name(&socket.path).is_some_and(|name| names.contains(name)) {
            found.push(socket);
        }
    }
    Ok(found)
}

/// The last component of a path as the table prints it.
fn file_name(path: &[u8]) -> Option<&[u8]> {
    path.rsplit(|&b| b == b'/').next().filter(|name| !name.is_empty())
}

/// The processes holding the sockets with these inodes, as far as `/proc` lets this process
/// see them: a map from inode to the first pid found with a descriptor `socket:[inode]`.
///
/// Best effort: processes of other users (without privileges), of other PID namespaces, or
/// that exit meanwhile are skipped, and their sockets are simply not in the map.
pub(crate) fn socket_holders(inodes: &HashSet<u64>) -> HashMap<u64, u32> {
    let mut holders = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else { return holders };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        for inode in socket_inodes_of(pid) {
            if inodes.contains(&inode) {
                holders.entry(inode).or_insert(pid);
            }
        }
        if holders.len() == inodes.len() {
            break;
        }
    }
    holders
}

/// The socket inodes among the descriptors of process `pid`; none if they cannot be read.
fn socket_inodes_of(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| socket_link_inode(target.as_os_str().as_bytes()))
        .collect()
}

/// The inode in a descriptor link to a socket, `socket:[12345]`.
fn socket_link_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Connects without blocking: a refusal means nobody listens.
fn probe(path: &Path) -> io::Result<PathState> {
    let addr = SocketAddrUnix::new(path)?;
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    match connect(&sock, &addr) {
        Err(rustix::io::Errno::CONNREFUSED) => Ok(PathState::Stale),
        Err(rustix::io::Errno::NOENT) => Ok(PathState::Missing),
        // Connected, in progress, or a full backlog: someone is there. Anything else we cannot
        // interpret is treated as alive too: a live socket must never be removed.
        _ => Ok(PathState::Live),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_table_lines() {
        let line = b"0000000000000000: 00000002 00000000 00010000 0001 01 123456 /run/app/my sock.sock";
        assert_eq!(table_path(line), Some(&b"/run/app/my sock.sock"[..]));
        let unnamed = b"0000000000000000: 00000003 00000000 00000000 0001 03 23456";
        assert_eq!(table_path(unnamed), None);
        let header = b"Num       RefCount Protocol Flags    Type St Inode Path";
        assert_eq!(table_path(header), Some(&b"Path"[..]));
    }

    #[test]
    fn parses_table_lines_with_inodes() {
        let listening = b"0000000000000000: 00000002 00000000 00010000 0001 01 123456 /run/app/my sock.sock";
        let socket = unconnected_socket(listening).unwrap();
        assert_eq!((socket.inode, &socket.path[..]), (123456, &b"/run/app/my sock.sock"[..]));
        let accepted = b"0000000000000000: 00000003 00000000 00000000 0001 03 123457 /run/app/a.sock";
        assert_eq!(unconnected_socket(accepted), None, "a connection does not make a path live");
        let unnamed = b"0000000000000000: 00000003 00000000 00000000 0001 01 23456";
        assert_eq!(unconnected_socket(unnamed), None);
        let header = b"Num       RefCount Protocol Flags    Type St Inode Path";
        assert_eq!(unconnected_socket(header), None);
        for broken in [&b""[..], b"garbage", b"0: 2 0 10000 1 zz 1 /p", b"0: 2 0 10000 1 01 -1 /p"] {
            assert_eq!(unconnected_socket(broken), None, "{:?}", String::from_utf8_lossy(broken));
        }
    }

    #[test]
    fn parses_descriptor_links() {
        assert_eq!(socket_link_inode(b"socket:[64182843]"), Some(64182843));
        for other in [&b"pipe:[12]"[..], b"/dev/null", b"socket:[]", b"socket:[12", b"socket:[x]"] {
            assert_eq!(socket_link_inode(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn finds_listening_sockets_by_name_and_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findme-unix-sockets.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // An accepted connection is listed under the same path; it must not be taken for it.
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _accepted = listener.accept().unwrap();
        let names: HashSet<&[u8]> = [&b"findme-unix-sockets.sock"[..]].into();
        let found = unconnected_sockets_named(&names).unwrap();
        let ours: Vec<_> = found.iter().filter(|s| s.path == path.as_os_str().as_bytes()).collect();
        assert_eq!(ours.len(), 1, "{found:?}");
        let holders = socket_holders(&[ours[0].inode].into());
        assert_eq!(holders.get(&ours[0].inode), Some(&std::process::id()));
        drop(listener);
        let after = unconnected_sockets_named(&names).unwrap();
        assert!(after.iter().all(|s| s.path != path.as_os_str().as_bytes()), "{after:?}");
    }

    #[test]
    fn tells_live_stale_missing_and_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sock");
        let _listener = UnixListener::bind(&live).unwrap();
        assert_eq!(state(&live).unwrap(), PathState::Live);

        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert_eq!(state(&stale).unwrap(), PathState::Stale);

        assert_eq!(state(&dir.path().join("none.sock")).unwrap(), PathState::Missing);
        let file = dir.path().join("file.sock");
        fs::write(&file, b"x").unwrap();
        assert_eq!(state(&file).unwrap(), PathState::NotASocket);
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        assert_eq!(state(&link).unwrap(), PathState::NotASocket);
    }

    #[test]
    fn probe_alone_tells_live_from_stale() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sock");
        let _listener = UnixListener::bind(&live).unwrap();
        assert_eq!(probe(&live).unwrap(), PathState::Live);
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert_eq!(probe(&stale).unwrap(), PathState::Stale);
    }
}
