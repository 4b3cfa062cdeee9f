//! The store's entries on the wire: each typed entry as a descriptor list entry (`kind`, `id`,
//! `network`, `addr`) and back.
//!
//! Go's kinds are `listener`, `conn` and `file`; ours add `fd`, and a UDP socket is a `conn` of
//! network `udp`, which a Go reader understands. The network and address are kept as the
//! creator named them (`tcp4`, say), and an entry of a kind this version does not know is kept
//! as [`Kind::Other`], so that every entry goes on to the next process as it came.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::descriptor::{Address, Kind};
use crate::fds::Entry;
use crate::protocol::WireEntry;

/// A received entry as the store keeps it, under its id.
pub(crate) fn from_wire(wire: WireEntry, fd: OwnedFd) -> (String, Entry) {
    let WireEntry { kind, id, network, addr } = wire;
    let kind = kind_of(&kind, &network);
    (id, Entry::inherited(kind, Address { network, addr }, fd))
}

/// The list to hand over, in the store's (id) order, each entry with its descriptor.
pub(crate) fn snapshot(entries: &BTreeMap<String, Entry>) -> Vec<(WireEntry, Arc<OwnedFd>)> {
    entries.iter().map(|(id, entry)| (to_wire(id, entry), Arc::clone(&entry.fd))).collect()
}

fn to_wire(id: &str, entry: &Entry) -> WireEntry {
    let Address { network, addr } = &entry.address;
    WireEntry {
        kind: wire_kind(&entry.kind, network).into(),
        id: id.into(),
        network: network.clone(),
        addr: addr.clone(),
    }
}

fn kind_of(kind: &str, network: &str) -> Kind {
    match (kind, network) {
        ("listener", "tcp" | "tcp4" | "tcp6") => Kind::TcpListener,
        ("listener", "unix") => Kind::UnixListener,
        ("conn", "udp" | "udp4" | "udp6") => Kind::UdpSocket,
        ("conn", "tcp" | "tcp4" | "tcp6") => Kind::TcpStream,
        ("conn", "unix") => Kind::UnixStream,
        ("file", _) => Kind::File,
        ("fd", _) => Kind::Fd,
        (kind, "") => Kind::Other(kind.to_owned()),
        (kind, network) => Kind::Other(format!("{kind}/{network}")),
    }
}

/// The inverse of [`kind_of`], given the same `network`.
fn wire_kind<'k>(kind: &'k Kind, network: &str) -> &'k str {
    match kind {
        Kind::TcpListener | Kind::UnixListener => "listener",
        Kind::UdpSocket | Kind::TcpStream | Kind::UnixStream => "conn",
        Kind::File => "file",
        Kind::Fd => "fd",
        Kind::Other(name) if network.is_empty() => name,
        Kind::Other(name) => {
            name.strip_suffix(network).and_then(|kind| kind.strip_suffix('/')).unwrap_or(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn wire(kind: &str, network: &str, addr: &str) -> WireEntry {
        WireEntry { kind: kind.into(), id: "x".into(), network: network.into(), addr: addr.into() }
    }

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn round_trip(entry: &WireEntry) -> WireEntry {
        let (id, stored) = from_wire(entry.clone(), null());
        to_wire(&id, &stored)
    }

    #[test]
    fn maps_go_kinds() {
        let kind = |k, n| kind_of(k, n);
        assert_eq!(kind("listener", "tcp"), Kind::TcpListener);
        assert_eq!(kind("listener", "tcp6"), Kind::TcpListener);
        assert_eq!(kind("listener", "unix"), Kind::UnixListener);
        assert_eq!(kind("conn", "tcp"), Kind::TcpStream);
        assert_eq!(kind("conn", "unix"), Kind::UnixStream);
        assert_eq!(kind("conn", "udp"), Kind::UdpSocket);
        assert_eq!(kind("file", ""), Kind::File);
        assert_eq!(kind("listener", "unixpacket"), Kind::Other("listener/unixpacket".into()));
        assert_eq!(kind("new", ""), Kind::Other("new".into()));
    }

    #[test]
    fn entries_go_on_as_they_came() {
        for entry in [
            wire("listener", "tcp4", "0.0.0.0:80"),
            wire("listener", "unixpacket", "/run/x.sock"),
            wire("conn", "udp6", "[::1]:53"),
            wire("file", "", ""),
            wire("file", "weird", "also kept"),
            wire("future-kind", "", ""),
            wire("a/b", "c", "d"),
            wire("listener", "", ""),
        ] {
            assert_eq!(round_trip(&entry), entry);
        }
    }

    #[test]
    fn our_values_are_written_as_before() {
        use crate::descriptor::Sealed;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let entry = Entry::inherited(Kind::TcpListener, l.address(), null());
        let addr = l.local_addr().unwrap().to_string();
        assert_eq!(to_wire("web", &entry), WireEntry { id: "web".into(), ..wire("listener", "tcp", &addr) });
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let entry = Entry::inherited(Kind::UdpSocket, u.address(), null());
        assert_eq!(to_wire("x", &entry).kind, "conn");
        assert_eq!(to_wire("x", &Entry::inherited(Kind::Fd, Address::default(), null())), wire("fd", "", ""));
    }

    proptest! {
        #[test]
        fn every_entry_goes_on_as_it_came(
            kind in prop_oneof![Just("listener".to_string()), Just("conn".into()), Just("file".into()), Just("fd".into()), ".{0,12}"],
            network in prop_oneof![Just("tcp".to_string()), Just("unix".into()), Just("udp6".into()), Just(String::new()), ".{0,8}"],
            addr in ".{0,16}",
        ) {
            let entry = wire(&kind, &network, &addr);
            prop_assert_eq!(round_trip(&entry), entry);
        }
    }
}
