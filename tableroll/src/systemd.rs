//! Readiness and draining reported to systemd, the `sd_notify(3)` protocol.
//!
//! With the `systemd` feature, an [`Upgrader`](crate::Upgrader) running under a unit with
//! `Type=notify` (systemd sets `NOTIFY_SOCKET`) tells systemd:
//!
//! - `READY=1` and `MAINPID=<pid>` once [`ready`](crate::Upgrader::ready) made it the owner,
//!   so the next instance of a template unit becomes active only once it serves;
//! - `STOPPING=1` when a newcomer took over and this process starts draining.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. A notification that cannot be delivered is logged
//! and otherwise ignored: systemd's bookkeeping never stops a handoff.
//! [`Builder::systemd_notify`](crate::Builder::systemd_notify) turns the reports off.
//!
//! [`notify`] and [`notify_to`] send other states (`STATUS=…`, `WATCHDOG=1`) the same way.
//!
//! [`store_fd`] and [`remove_stored_fd`] keep descriptors in the unit's file descriptor store
//! (`FDSTORE=1` and `FDSTOREREMOVE=1` with `FDNAME=`), which a unit with
//! `FileDescriptorStoreMax=` accepts: systemd passes them back, by name, as `LISTEN_FDS` and
//! `LISTEN_FDNAMES` when it starts the unit's main process again.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use rustix::net::SocketAddrUnix;

use crate::error::{Error, Result};

/// The environment variable through which systemd names its notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, such as `"READY=1"`) to the
/// socket named by `$NOTIFY_SOCKET`. Returns `Ok(false)` without sending when the variable is
/// not set (the process is not run by systemd with notifications on).
///
/// # Errors
///
/// `$NOTIFY_SOCKET` names no usable address (neither an absolute path nor `@` and an abstract
/// name), or the datagram could not be sent (nobody listens there any more, say).
pub fn notify(state: &str) -> Result<bool> {
    notify_socket().map_or(Ok(false), |socket| notify_to(&socket, state).map(|()| true))
}

/// Sends `state` to the notification socket `socket`, written as systemd writes
/// `NOTIFY_SOCKET`: an absolute path, or `@` followed by an abstract socket name.
///
/// # Errors
///
/// `socket` is not such an address, or the datagram could not be sent.
pub fn notify_to(socket: &OsStr, state: &str) -> Result<()> {
    send(socket, state, None, "notifying systemd")
}

/// Stores `fd` in the file descriptor store of the unit, named `name`, through the socket named
/// by `$NOTIFY_SOCKET` (`FDSTORE=1` and `FDNAME=<name>`, the descriptor attached as
/// `SCM_RIGHTS`). Returns `Ok(false)` without sending when the variable is not set.
///
/// systemd keeps a duplicate: `fd` stays open here. It accepts the descriptor only from a unit
/// with `FileDescriptorStoreMax=` above 0, from a process `NotifyAccess=` allows, and drops a
/// descriptor it already holds (the same open socket) rather than storing it twice.
///
/// # Errors
///
/// `name` is not a valid descriptor name (see [`valid_fd_name`]), `$NOTIFY_SOCKET` names no
/// usable address, or the datagram could not be sent.
pub fn store_fd(name: &str, fd: impl AsFd) -> Result<bool> {
    notify_socket().map_or(Ok(false), |socket| store_fd_to(&socket, name, fd.as_fd()).map(|()| true))
}

/// Sends `FDSTORE=1` and `FDNAME=<name>` with `fd` attached to the notification socket `socket`,
/// written as systemd writes `NOTIFY_SOCKET`.
///
/// # Errors
///
/// As for [`store_fd`].
pub fn store_fd_to(socket: &OsStr, name: &str, fd: BorrowedFd<'_>) -> Result<()> {
    let state = format!("FDSTORE=1\nFDNAME={}", checked_fd_name(socket, name)?);
    send(socket, &state, Some(fd), "storing a descriptor with systemd")
}

/// Removes the descriptors named `name` from the unit's file descriptor store
/// (`FDSTOREREMOVE=1` and `FDNAME=<name>` to `$NOTIFY_SOCKET`). Returns `Ok(false)` without
/// sending when the variable is not set.
///
/// # Errors
///
/// As for [`store_fd`].
pub fn remove_stored_fd(name: &str) -> Result<bool> {
    notify_socket().map_or(Ok(false), |socket| remove_stored_fd_to(&socket, name).map(|()| true))
}

/// Sends `FDSTOREREMOVE=1` and `FDNAME=<name>` to the notification socket `socket`.
///
/// # Errors
///
/// As for [`store_fd`].
pub fn remove_stored_fd_to(socket: &OsStr, name: &str) -> Result<()> {
    let name = checked_fd_name(socket, name)?;
    notify_to(socket, &format!("FDSTOREREMOVE=1\nFDNAME={name}"))
}

/// Whether systemd accepts `name` as a descriptor name (`FDNAME=`, `FileDescriptorName=`): 1 to
/// 255 printable ASCII characters other than `:` (names travel colon-separated in
/// `LISTEN_FDNAMES`).
pub fn valid_fd_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn checked_fd_name<'n>(socket: &OsStr, name: &'n str) -> Result<&'n str> {
    if valid_fd_name(name) {
        return Ok(name);
    }
    let detail =
        format!("{name:?} is not a descriptor name: 1 to 255 printable ASCII characters other than ':'");
    Err(Error::io_at(
        "naming a descriptor for systemd",
        socket,
        io::Error::new(io::ErrorKind::InvalidInput, detail),
    ))
}

/// `$NOTIFY_SOCKET`, unless unset or empty.
fn notify_socket() -> Option<OsString> {
    std::env::var_os(NOTIFY_SOCKET).filter(|socket| !socket.is_empty())
}

/// Sends `state`, with `fd` attached if given, as one datagram to the notification socket
/// `socket`; `operation` names the sending in errors.
fn send(socket: &OsStr, state: &str, fd: Option<BorrowedFd<'_>>, operation: &'static str) -> Result<()> {
    let addr = notify_address(socket)?;
    let sender = UnixDatagram::unbound().map_err(|e| Error::io("creating a socket to notify systemd", e))?;
    let sent = crate::sys::scm_rights::send_to(sender.as_fd(), &addr, state.as_bytes(), fd)
        .map_err(|e| Error::io_at(operation, socket, e))?;
    if sent != state.len() {
        return Err(Error::io_at(operation, socket, io::ErrorKind::WriteZero.into()));
    }
    Ok(())
}

/// Parses a `NOTIFY_SOCKET` value.
fn notify_address(socket: &OsStr) -> Result<SocketAddrUnix> {
    let bytes = socket.as_bytes();
    let invalid = |detail: &str| {
        Error::io_at(
            "reading NOTIFY_SOCKET",
            socket,
            io::Error::new(io::ErrorKind::InvalidInput, format!("{detail}: {}", socket.to_string_lossy())),
        )
    };
    match bytes.first() {
        Some(b'/') => SocketAddrUnix::new(socket).map_err(|_| invalid("path too long")),
        Some(b'@') => {
            SocketAddrUnix::new_abstract_name(&bytes[1..]).map_err(|_| invalid("abstract name too long"))
        }
        _ => Err(invalid("neither an absolute path nor an abstract socket name")),
    }
}

/// Where an upgrader reports to, resolved when it is built.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    socket: Option<OsString>,
}

impl Reporter {
    /// Reports to `$NOTIFY_SOCKET` if `enabled` and the variable is set.
    pub(crate) fn from_env(enabled: bool) -> Reporter {
        let socket = notify_socket().filter(|_| enabled);
        Reporter { socket }
    }

    #[cfg(test)]
    pub(crate) fn to(socket: &std::path::Path) -> Reporter {
        Reporter { socket: Some(socket.as_os_str().to_owned()) }
    }

    /// This process became the owner and serves.
    pub(crate) fn ready(&self, id: &str) {
        let pid = std::process::id();
        self.send(&format!(
            "READY=1\nMAINPID={pid}\nSTATUS=serving as the owner of the upgrade group (id {id})"
        ));
    }

    /// A newcomer took over; this process drains.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=a newcomer took over; draining");
    }

    fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        match notify_to(socket, state) {
            Ok(()) => tracing::debug!(state, "notified systemd"),
            Err(e) => tracing::warn!(error = %e, state, "could not notify systemd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&socket), "READY=1");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!("tableroll-test-{}-{:?}", std::process::id(), std::thread::current().id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(receive(&socket), "STOPPING=1");
    }

    #[test]
    fn refuses_relative_and_empty_addresses() {
        for bad in ["", "relative/notify", "vsock:2:1234"] {
            let e = notify_to(OsStr::new(bad), "READY=1").unwrap_err();
            assert!(e.to_string().contains("NOTIFY_SOCKET"), "{bad}: {e}");
        }
    }

    #[test]
    fn nobody_listening_is_an_error_and_reporting_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let e = notify_to(path.as_os_str(), "READY=1").unwrap_err();
        assert!(matches!(e.kind(), crate::ErrorKind::Io), "{e}");
        Reporter::to(&path).ready("x"); // logs, does not panic or fail
    }

    /// One datagram and the descriptors it carried.
    fn receive_with_fds(socket: &UnixDatagram) -> (String, Vec<std::os::fd::OwnedFd>) {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        use std::mem::MaybeUninit;
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).unwrap();
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        (String::from_utf8(buf[..msg.bytes].to_vec()).unwrap(), fds)
    }

    #[test]
    fn stores_a_descriptor_by_name_and_removes_it() {
        use std::net::TcpListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        store_fd_to(path.as_os_str(), "web", listener.as_fd()).unwrap();
        let (state, mut fds) = receive_with_fds(&socket);
        assert_eq!(state, "FDSTORE=1\nFDNAME=web");
        assert_eq!(fds.len(), 1);
        // The same listening socket: its address, and a connection to it is accepted there.
        let stored = TcpListener::from(fds.remove(0));
        assert_eq!(stored.local_addr().unwrap(), listener.local_addr().unwrap());
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        stored.accept().unwrap();
        remove_stored_fd_to(path.as_os_str(), "web").unwrap();
        let (state, fds) = receive_with_fds(&socket);
        assert_eq!(state, "FDSTOREREMOVE=1\nFDNAME=web");
        assert!(fds.is_empty());
    }

    #[test]
    fn refuses_names_systemd_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let long = "x".repeat(256);
        for bad in ["", "a:b", "with space", "tab\t", "é", long.as_str()] {
            assert!(!valid_fd_name(bad), "{bad:?}");
            let e = store_fd_to(path.as_os_str(), bad, socket.as_fd()).unwrap_err();
            assert!(e.to_string().contains("not a descriptor name"), "{bad:?}: {e}");
            assert!(remove_stored_fd_to(path.as_os_str(), bad).is_err(), "{bad:?}");
        }
        // Nothing was sent.
        assert_eq!(socket.recv(&mut [0u8; 64]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(valid_fd_name(&"x".repeat(255)) && valid_fd_name("web-1.admin_2"));
    }

    #[test]
    fn storing_with_nobody_listening_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = store_fd_to(path.as_os_str(), "web", listener.as_fd()).unwrap_err();
        assert!(matches!(e.kind(), crate::ErrorKind::Io), "{e}");
    }

    #[test]
    fn reporter_sends_ready_with_mainpid_then_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let reporter = Reporter::to(&path);
        reporter.ready("web-1");
        let ready = receive(&socket);
        let lines: Vec<&str> = ready.lines().collect();
        assert_eq!(lines[..2], ["READY=1".to_string(), format!("MAINPID={}", std::process::id())]);
        assert!(lines[2].starts_with("STATUS=") && lines[2].contains("web-1"), "{ready}");
        reporter.stopping();
        assert!(receive(&socket).starts_with("STOPPING=1\n"));
    }
}
