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
//! A sweep of many paths ([`states`]) reads the table a constant number of times for all of
//! them, not for each: with thousands of sockets on the host a read takes milliseconds.
//!
//! For `tableroll status`, which must never connect, the table is also read for the inodes of
//! the listed sockets, and `/proc/<pid>/fd` for the processes that hold them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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
    if let Some(settled) = without_table(path)? {
        return Ok(settled);
    }
    if in_kernel_table(path) {
        return Ok(PathState::Live);
    }
    probe(path)
}

/// What stands at `path` when that is clear without the kernel's table: `None` for a socket
/// file, which only the table (or a probe) can tell live from stale.
fn without_table(path: &Path) -> io::Result<Option<PathState>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(None),
        Ok(_) => Ok(Some(PathState::NotASocket)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(PathState::Missing)),
        Err(e) => Err(e),
    }
}

/// [`state`] of many paths, with the kernel's table read at most [`TABLE_READS`] times in all
/// however many there are (a read costs about a millisecond per thousand sockets on the host,
/// and a sweep may meet thousands of stale sockets).
///
/// The table is read once for the socket files among `paths`, and again only while one of them
/// is missing from what the reads found. A path counts as listed when the table names it, or
/// names another path to the same file with the same file name (a directory reached through a
/// symlink). Only the paths no read listed are probed with `connect(2)`, where a refusal is the
/// expected answer: a socket the table lists is never connected to.
pub(crate) fn states(paths: &[PathBuf]) -> Vec<io::Result<PathState>> {
    let mut states: Vec<io::Result<PathState>> = Vec::with_capacity(paths.len());
    let mut sockets = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        match without_table(path) {
            Ok(None) => {
                sockets.push(index);
                // Settled below, by the table or the probe.
                states.push(Ok(PathState::Live));
            }
            Ok(Some(state)) => states.push(Ok(state)),
            Err(e) => states.push(Err(e)),
        }
    }
    let socket_paths: Vec<&Path> = sockets.iter().map(|&i| paths[i].as_path()).collect();
    for (index, listed) in sockets.iter().zip(listed_in_table(&socket_paths)) {
        if !listed {
            states[*index] = probe(&paths[*index]);
        }
    }
    states
}

/// Which of `paths` the kernel's table lists, reading it at most [`TABLE_READS`] times.
fn listed_in_table(paths: &[&Path]) -> Vec<bool> {
    let mut listed = vec![false; paths.len()];
    let names: HashSet<&[u8]> = paths.iter().filter_map(|p| p.file_name()).map(OsStrExt::as_bytes).collect();
    let absolute: Vec<Option<PathBuf>> = paths.iter().map(|p| std::path::absolute(p).ok()).collect();
    for _ in 0..TABLE_READS {
        if listed.iter().all(|&l| l) {
            break;
        }
        // An unreadable table lists nothing: the probe answers for every path.
        let Ok(table) = table_paths_named(&names) else { break };
        for ((found, path), absolute) in listed.iter_mut().zip(paths).zip(&absolute) {
            *found = *found || table_names(&table, path, absolute.as_deref());
        }
    }
    listed
}

/// Whether `table` (the paths of one read, by file name) names the socket file at `path`:
/// by its absolute path, or by another path that leads to the same file.
fn table_names(table: &HashMap<Vec<u8>, Vec<Vec<u8>>>, path: &Path, absolute: Option<&Path>) -> bool {
    let Some(listed) = path.file_name().and_then(|name| table.get(name.as_bytes())) else { return false };
    let wanted = absolute.map(|a| a.as_os_str().as_bytes());
    listed.iter().any(|other| Some(other.as_slice()) == wanted)
        || listed.iter().any(|other| same_file(path, other))
}

fn same_file(path: &Path, other: &[u8]) -> bool {
    let (Ok(a), Ok(b)) =
        (fs::symlink_metadata(path), fs::symlink_metadata(Path::new(OsStr::from_bytes(other))))
    else {
        return false;
    };
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// The paths of one read of the kernel's table whose file name is one of `names`, grouped by
/// file name.
fn table_paths_named(names: &HashSet<&[u8]>) -> io::Result<HashMap<Vec<u8>, Vec<Vec<u8>>>> {
    let mut found: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    for line in io::BufReader::with_capacity(64 << 10, open_table()?).split(b'\n') {
        let line = line?;
        let Some(path) = table_path(&line) else { continue };
        if let Some(name) = file_name(path).filter(|name| names.contains(name)) {
            found.entry(name.to_vec()).or_default().push(path.to_vec());
        }
    }
    Ok(found)
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
    let Ok(table) = open_table() else { return false };
    io::BufReader::with_capacity(64 << 10, table)
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| table_path(&line) == Some(wanted))
}

/// Opens the kernel's table of Unix sockets. Every read of the table starts here, so that tests
/// can count the reads (each costs about a millisecond per thousand sockets on the host).
fn open_table() -> io::Result<fs::File> {
    #[cfg(test)]
    TABLE_OPENS.with(|opens| opens.set(opens.get() + 1));
    fs::File::open("/proc/net/unix")
}

#[cfg(test)]
thread_local! {
    static TABLE_OPENS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times this thread has opened the kernel's table of Unix sockets.
#[cfg(test)]
pub(crate) fn table_reads() -> usize {
    TABLE_OPENS.with(std::cell::Cell::get)
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
    let table = open_table()?;
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

    #[test]
    fn states_of_many_paths_never_connect_to_a_listed_socket() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let listener = UnixListener::bind(real.join("live.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        drop(UnixListener::bind(real.join("stale.sock")).unwrap());
        fs::write(real.join("file.sock"), b"x").unwrap();
        // The same directory through a symlink: the table names the sockets by the real path.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        for base in [&real, &link] {
            let names = ["live.sock", "stale.sock", "file.sock", "none.sock"];
            let paths: Vec<PathBuf> = names.iter().map(|name| base.join(name)).collect();
            let states: Vec<PathState> = states(&paths).into_iter().map(Result::unwrap).collect();
            let expected = [PathState::Live, PathState::Stale, PathState::NotASocket, PathState::Missing];
            assert_eq!(states, expected, "through {}", base.display());
        }
        let err = listener.accept().expect_err("a listed socket was connected to");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(states(&[]).is_empty());
    }
}
