//! Is anyone behind a Unix socket path? Answered without disturbing a live process.
//!
//! Connecting to a live upgrade socket is not free: its owner answers by sending every
//! descriptor. So the kernel's table of Unix sockets (`/proc/net/unix`) is read first: a path
//! listed there belongs to a socket that is still open, listening or about to (bound but not yet
//! listening: a newcomer between `bind` and `listen` is alive too). Only a path missing from the
//! table is probed with `connect(2)`, where a refusal is the expected answer; the probe covers
//! sockets the table cannot show (another network namespace, another mount namespace, a
//! relative path).

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
    let mut rest = line;
    for _ in 0..7 {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ')?;
        rest = &rest[end..];
    }
    let path = &rest[1..];
    (!path.is_empty()).then_some(path)
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
