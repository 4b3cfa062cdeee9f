//! What a stored descriptor is: its kind, how each std type maps to the wire, and how it is
//! described to the next process.

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use crate::protocol::WireEntry;

/// The kind of a stored descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A listening TCP socket ([`TcpListener`]).
    TcpListener,
    /// A listening Unix stream socket ([`UnixListener`]).
    UnixListener,
    /// A UDP socket ([`UdpSocket`]); on the wire a `conn` of network `udp`, which a Go reader
    /// turns into a `*net.UDPConn`.
    UdpSocket,
    /// A connected TCP socket ([`TcpStream`]).
    TcpStream,
    /// A connected Unix stream socket ([`UnixStream`]).
    UnixStream,
    /// A file ([`File`]).
    File,
    /// Any other descriptor ([`OwnedFd`]), stored with [`Fds::fd_with`](crate::Fds::fd_with).
    Fd,
    /// A kind this version does not know, received from another process: `kind/network` as
    /// the sender named them. It is kept, and reachable with [`Fds::fd`](crate::Fds::fd).
    Other(String),
}

impl Kind {
    pub(crate) fn of(entry: &WireEntry) -> Kind {
        let net = entry.network.as_str();
        match (entry.kind.as_str(), net) {
            ("listener", "tcp" | "tcp4" | "tcp6") => Kind::TcpListener,
            ("listener", "unix") => Kind::UnixListener,
            ("conn", "udp" | "udp4" | "udp6") => Kind::UdpSocket,
            ("conn", "tcp" | "tcp4" | "tcp6") => Kind::TcpStream,
            ("conn", "unix") => Kind::UnixStream,
            ("file", _) => Kind::File,
            ("fd", _) => Kind::Fd,
            (kind, "") => Kind::Other(kind.to_owned()),
            (kind, net) => Kind::Other(format!("{kind}/{net}")),
        }
    }

    /// A short human name, as used in errors.
    pub fn name(&self) -> &str {
        match self {
            Kind::TcpListener => "TCP listener",
            Kind::UnixListener => "Unix listener",
            Kind::UdpSocket => "UDP socket",
            Kind::TcpStream => "TCP stream",
            Kind::UnixStream => "Unix stream",
            Kind::File => "file",
            Kind::Fd => "descriptor",
            Kind::Other(name) => name,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of [`Fds::list`](crate::Fds::list).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Descriptor {
    /// The store id.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// The address as its creator recorded it (`127.0.0.1:8080`, a socket path), or empty.
    pub addr: String,
    /// Received from the previous owner (rather than created by this process).
    pub inherited: bool,
}

/// A std type the store can hold and hand out.
pub(crate) trait Shareable: AsFd + From<OwnedFd> + Sized {
    /// The kind values of this type are stored as.
    const KIND: Kind;

    /// Whether a stored entry of `kind` may be handed out as this type.
    fn accepts(kind: &Kind) -> bool {
        *kind == Self::KIND
    }

    /// The wire entry describing this value under `id`.
    fn describe(&self, id: &str) -> WireEntry;
}

fn entry(kind: &str, id: &str, network: &str, addr: String) -> WireEntry {
    WireEntry { kind: kind.into(), id: id.into(), network: network.into(), addr }
}

fn display<T: std::fmt::Display>(addr: io::Result<T>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

fn unix_path(addr: io::Result<std::os::unix::net::SocketAddr>) -> String {
    addr.ok().and_then(|a| a.as_pathname().map(|p| p.to_string_lossy().into_owned())).unwrap_or_default()
}

impl Shareable for TcpListener {
    const KIND: Kind = Kind::TcpListener;
    fn describe(&self, id: &str) -> WireEntry {
        entry("listener", id, "tcp", display(self.local_addr()))
    }
}

impl Shareable for UnixListener {
    const KIND: Kind = Kind::UnixListener;
    fn describe(&self, id: &str) -> WireEntry {
        entry("listener", id, "unix", unix_path(self.local_addr()))
    }
}

impl Shareable for UdpSocket {
    const KIND: Kind = Kind::UdpSocket;
    fn describe(&self, id: &str) -> WireEntry {
        entry("conn", id, "udp", display(self.local_addr()))
    }
}

impl Shareable for TcpStream {
    const KIND: Kind = Kind::TcpStream;
    fn describe(&self, id: &str) -> WireEntry {
        entry("conn", id, "tcp", display(self.peer_addr()))
    }
}

impl Shareable for UnixStream {
    const KIND: Kind = Kind::UnixStream;
    fn describe(&self, id: &str) -> WireEntry {
        entry("conn", id, "unix", unix_path(self.peer_addr()))
    }
}

impl Shareable for File {
    const KIND: Kind = Kind::File;
    fn describe(&self, id: &str) -> WireEntry {
        entry("file", id, "", String::new())
    }
}

impl Shareable for OwnedFd {
    const KIND: Kind = Kind::Fd;
    /// Any stored descriptor can be had as a plain `OwnedFd`.
    fn accepts(_: &Kind) -> bool {
        true
    }
    fn describe(&self, id: &str) -> WireEntry {
        entry("fd", id, "", String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(kind: &str, network: &str) -> WireEntry {
        entry(kind, "x", network, String::new())
    }

    #[test]
    fn maps_go_kinds() {
        assert_eq!(Kind::of(&wire("listener", "tcp")), Kind::TcpListener);
        assert_eq!(Kind::of(&wire("listener", "tcp6")), Kind::TcpListener);
        assert_eq!(Kind::of(&wire("listener", "unix")), Kind::UnixListener);
        assert_eq!(Kind::of(&wire("conn", "tcp")), Kind::TcpStream);
        assert_eq!(Kind::of(&wire("conn", "unix")), Kind::UnixStream);
        assert_eq!(Kind::of(&wire("conn", "udp")), Kind::UdpSocket);
        assert_eq!(Kind::of(&wire("file", "")), Kind::File);
        assert_eq!(Kind::of(&wire("listener", "unixpacket")), Kind::Other("listener/unixpacket".into()));
        assert_eq!(Kind::of(&wire("new", "")), Kind::Other("new".into()));
    }

    #[test]
    fn describes_round_trip_to_their_kind() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = l.describe("web");
        assert_eq!(e.addr, l.local_addr().unwrap().to_string());
        assert_eq!(Kind::of(&e), Kind::TcpListener);
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(Kind::of(&u.describe("dns")), Kind::UdpSocket);
        assert!(OwnedFd::accepts(&Kind::Other("z".into())));
        assert!(!TcpListener::accepts(&Kind::UnixListener));
    }
}
