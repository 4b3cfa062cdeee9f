//! Unix stream sockets by path, beyond what std offers: an owner-only bind, a connect bounded
//! by a timeout, and the address a socket is bound to.

use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{fchmod, Mode};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use rustix::net::{
    bind, connect, getsockname, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
};

/// `socket`, `fchmod(0600)`, `bind`, `listen`: the mode is set on the socket before `bind`,
/// which creates the file with it, so there is no moment where the file is more open. The
/// socket is close-on-exec.
///
/// # Errors
///
/// The path does not fit a socket address; creating, binding (`AddrInUse` if a file is there)
/// or listening failed. A socket file created by a bind whose listen failed is removed.
pub(crate) fn bind_owner_only(path: &Path, backlog: i32) -> io::Result<UnixListener> {
    let addr = SocketAddrUnix::new(path)?;
    let sock = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    fchmod(&sock, Mode::from_raw_mode(0o600))?;
    bind(&sock, &addr)?;
    if let Err(e) = listen(&sock, backlog) {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok(UnixListener::from(sock))
}

/// Connects a close-on-exec Unix stream socket to `path`. A connect to a socket whose backlog
/// is full blocks; `timeout` bounds that wait (through the send timeout, which the kernel
/// applies to it), and is cleared again once connected.
///
/// # Errors
///
/// `ConnectionRefused` (nobody listens: its process is gone), `NotFound`, `WouldBlock` (the
/// backlog stayed full for `timeout`), `PermissionDenied`, or another failure.
pub(crate) fn connect_bounded(path: &Path, timeout: Option<Duration>) -> io::Result<UnixStream> {
    let addr = SocketAddrUnix::new(path)?;
    let sock = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    if let Some(timeout) = timeout {
        set_socket_timeout(&sock, Timeout::Send, Some(timeout.max(Duration::from_micros(1))))?;
    }
    connect(&sock, &addr)?;
    if timeout.is_some() {
        set_socket_timeout(&sock, Timeout::Send, None)?;
    }
    Ok(UnixStream::from(sock))
}

/// The IP address and port the socket `fd` is bound to, if it is an IP socket.
pub(crate) fn inet_local_addr(fd: impl AsFd) -> Option<SocketAddr> {
    SocketAddr::try_from(getsockname(fd).ok()?).ok()
}

/// The path the Unix socket `fd` is bound to, if it is one bound to a path.
pub(crate) fn unix_local_path(fd: impl AsFd) -> Option<PathBuf> {
    let unix = SocketAddrUnix::try_from(getsockname(fd).ok()?).ok()?;
    Some(Path::new(OsStr::from_bytes(unix.path_bytes()?)).to_owned())
}
