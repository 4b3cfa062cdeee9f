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

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

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
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket`, written as systemd writes
/// `NOTIFY_SOCKET`: an absolute path, or `@` followed by an abstract socket name.
///
/// # Errors
///
/// `socket` is not such an address, or the datagram could not be sent.
pub fn notify_to(socket: &OsStr, state: &str) -> Result<()> {
    let addr = notify_address(socket)?;
    let sender = UnixDatagram::unbound().map_err(|e| Error::io("creating a socket to notify systemd", e))?;
    let sent = sender
        .send_to_addr(state.as_bytes(), &addr)
        .map_err(|e| Error::io_at("notifying systemd", socket, e))?;
    if sent != state.len() {
        return Err(Error::io_at("notifying systemd", socket, io::ErrorKind::WriteZero.into()));
    }
    Ok(())
}

/// Parses a `NOTIFY_SOCKET` value.
fn notify_address(socket: &OsStr) -> Result<SocketAddr> {
    let bytes = socket.as_bytes();
    let invalid = |detail: &str| {
        Error::io_at(
            "reading NOTIFY_SOCKET",
            socket,
            io::Error::new(io::ErrorKind::InvalidInput, format!("{detail}: {}", socket.to_string_lossy())),
        )
    };
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket).map_err(|_| invalid("path too long")),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|_| invalid("abstract name too long"))
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
        let socket = std::env::var_os(NOTIFY_SOCKET).filter(|s| enabled && !s.is_empty());
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
