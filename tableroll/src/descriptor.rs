//! What a stored descriptor is: its [`Kind`], its address as its creator named it, and the std
//! types the store holds ([`Shareable`]). How kinds and addresses travel on the wire is the
//! session layer's business (`handoff::wire_entries`).

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

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
    /// Any other descriptor ([`OwnedFd`]), stored with
    /// [`Fds::get_or_insert_with::<OwnedFd>`](crate::Fds::get_or_insert_with).
    Fd,
    /// A kind this version does not know, received from another process: `kind/network` as
    /// the sender named them (`kind` alone when it named no network). It is kept, passed on
    /// as it came, and reachable with [`Fds::get::<OwnedFd>`](crate::Fds::get).
    Other(String),
}

impl Kind {
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

/// A std type the descriptor store holds and hands out, for [`Fds::get`](crate::Fds::get) and
/// [`Fds::get_or_insert_with`](crate::Fds::get_or_insert_with).
///
/// | type | stored as | handed out from |
/// | --- | --- | --- |
/// | [`TcpListener`] | [`Kind::TcpListener`] | that kind |
/// | [`UnixListener`] | [`Kind::UnixListener`] | that kind |
/// | [`UdpSocket`] | [`Kind::UdpSocket`] | that kind |
/// | [`TcpStream`] | [`Kind::TcpStream`] | that kind |
/// | [`UnixStream`] | [`Kind::UnixStream`] | that kind |
/// | [`File`] | [`Kind::File`] | that kind |
/// | [`OwnedFd`] | [`Kind::Fd`] | every kind, [`Kind::Other`] included |
///
/// The trait is sealed: the store must know how to describe a value to the next process.
pub trait Shareable: sealed::Sealed + AsFd + From<OwnedFd> {}

pub(crate) use sealed::{Address, Sealed};

/// What only the crate sees of [`Shareable`]. Its items are `pub` in a private module: a user
/// can name neither, so nobody outside implements the trait.
mod sealed {
    use super::Kind;

    pub trait Sealed {
        /// The kind values of this type are stored as.
        const KIND: Kind;

        /// Where this value points, to record with it.
        fn address(&self) -> Address;
    }

    /// Where a stored descriptor points, as its creator named it: the network (`tcp`, `tcp6`,
    /// `unix`, `udp`…, or empty) and the address (or empty). Informational, and kept verbatim
    /// for the next process.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Address {
        pub network: String,
        pub addr: String,
    }

    impl Address {
        pub(super) fn new(network: &str, addr: String) -> Address {
            Address { network: network.into(), addr }
        }
    }
}

/// Whether a stored entry of `kind` may be handed out as a `T`: one of `T`'s kind, or any one
/// as a plain [`OwnedFd`].
pub(crate) fn accepts<T: Shareable>(kind: &Kind) -> bool {
    T::KIND == Kind::Fd || *kind == T::KIND
}

fn display<T: std::fmt::Display>(addr: io::Result<T>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

fn unix_path(addr: io::Result<std::os::unix::net::SocketAddr>) -> String {
    addr.ok().and_then(|a| a.as_pathname().map(|p| p.to_string_lossy().into_owned())).unwrap_or_default()
}

impl Shareable for TcpListener {}
impl Sealed for TcpListener {
    const KIND: Kind = Kind::TcpListener;
    fn address(&self) -> Address {
        Address::new("tcp", display(self.local_addr()))
    }
}

impl Shareable for UnixListener {}
impl Sealed for UnixListener {
    const KIND: Kind = Kind::UnixListener;
    fn address(&self) -> Address {
        Address::new("unix", unix_path(self.local_addr()))
    }
}

impl Shareable for UdpSocket {}
impl Sealed for UdpSocket {
    const KIND: Kind = Kind::UdpSocket;
    fn address(&self) -> Address {
        Address::new("udp", display(self.local_addr()))
    }
}

impl Shareable for TcpStream {}
impl Sealed for TcpStream {
    const KIND: Kind = Kind::TcpStream;
    fn address(&self) -> Address {
        Address::new("tcp", display(self.peer_addr()))
    }
}

impl Shareable for UnixStream {}
impl Sealed for UnixStream {
    const KIND: Kind = Kind::UnixStream;
    fn address(&self) -> Address {
        Address::new("unix", unix_path(self.peer_addr()))
    }
}

impl Shareable for File {}
impl Sealed for File {
    const KIND: Kind = Kind::File;
    fn address(&self) -> Address {
        Address::default()
    }
}

impl Shareable for OwnedFd {}
impl Sealed for OwnedFd {
    const KIND: Kind = Kind::Fd;
    fn address(&self) -> Address {
        Address::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_record_their_address() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.address();
        assert_eq!(address.network, "tcp");
        assert_eq!(address.addr, l.local_addr().unwrap().to_string());
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(a.address(), Address::new("unix", String::new()), "an unnamed peer");
    }

    #[test]
    fn a_plain_descriptor_accepts_every_kind() {
        assert!(accepts::<OwnedFd>(&Kind::Other("z".into())));
        assert!(accepts::<OwnedFd>(&Kind::TcpListener));
        assert!(accepts::<UdpSocket>(&Kind::UdpSocket));
        assert!(!accepts::<TcpListener>(&Kind::UnixListener));
        assert!(!accepts::<File>(&Kind::Fd));
    }
}
