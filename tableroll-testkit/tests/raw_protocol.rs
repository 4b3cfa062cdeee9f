//! The wire protocol byte by byte (PROTOCOL.md): peers simulated by hand with raw sockets on
//! the other end of a real peer process, in both roles and both protocol versions.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use serde_json::json;
use util::wire::{frame, send_fd, take_lock, wait_readable, FakeOwner, RawNewcomer};
use util::{assert_hello, http_get, inherited_ids, listen_addr, Peer, TestDir};

/// A non-serving owner with one TCP listener `web`, ready; returns it and the address.
fn owner(dir: &TestDir, extra: &[&str]) -> (Peer, String) {
    let mut args = vec!["--id", "owner", "--listen", "web=tcp:127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut owner = Peer::start(dir.path(), &args);
    let addr = listen_addr(&owner.wait_for("listening"), "web");
    owner.wait_for("ready");
    (owner, addr)
}

/// Checks the owner's list frame: version 1 prefix, then exactly the one `web` listener.
fn check_list(raw: &RawNewcomer, addr: &str) {
    assert!(
        raw.list_body.starts_with(b"\t ["),
        "no version 1 prefix: {:?}",
        String::from_utf8_lossy(&raw.list_body)
    );
    assert!(raw.list_body.ends_with(b"]\n"), "{:?}", String::from_utf8_lossy(&raw.list_body));
    assert_eq!(raw.entries.len(), 1, "{:?}", raw.entries);
    let entry = &raw.entries[0];
    assert_eq!(
        (&entry["kind"], &entry["id"], &entry["addr"]),
        (&json!("listener"), &json!("web"), &json!(addr))
    );
    assert!(entry["network"].as_str().is_some_and(|n| n.starts_with("tcp")), "{entry}");
    assert!(!raw.fds[0].0.is_empty());
}

/// Accepts one connection on a received listener descriptor.
fn accept_on(fd: std::os::fd::BorrowedFd<'_>) {
    let listener = TcpListener::from(fd.try_clone_to_owned().unwrap());
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    wait_readable(listener.as_fd());
    listener.set_nonblocking(false).unwrap();
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer, _client.local_addr().unwrap());
}

#[test]
fn version_0_newcomer_takes_over() {
    let dir = TestDir::new();
    let (mut owner, addr) = owner(&dir, &[]);
    let raw = RawNewcomer::join(dir.path());
    check_list(&raw, &addr);

    (&raw.stream).write_all(&[0x2A]).unwrap();
    assert_eq!(raw.read_to_eof(), b"", "a version 0 ready byte gets no answer");
    take_over(raw, &dir, &mut owner);
}

#[test]
fn version_1_handshake_bytes() {
    let dir = TestDir::new();
    let (mut owner, addr) = owner(&dir, &[]);
    let raw = RawNewcomer::join(dir.path());
    check_list(&raw, &addr);

    let mut request = vec![0x42];
    request.extend(frame(b"{\"version\":1}\n"));
    assert_eq!(request[1..5], [0, 0, 0, 0x0e]);
    (&raw.stream).write_all(&request).unwrap();
    let reply = raw.read_to_eof();
    assert_eq!(
        reply,
        b"\x00\x00\x00\x18{\"msg\":\"stepping down\"}\n",
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    take_over(raw, &dir, &mut owner);
}

/// Ends a raw newcomer's handoff as protocol step 8 says, then checks that the owner stepped
/// down and that the inherited listener works.
fn take_over(raw: RawNewcomer, dir: &TestDir, owner: &mut Peer) {
    let web = raw.fd("web").try_clone_to_owned().unwrap();
    let (_, _upgrade_socket) = raw.become_owner(dir.path(), "raw");
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    accept_on(web.as_fd());
}

#[test]
fn unknown_version_keeps_the_owner() {
    let dir = TestDir::new();
    let (mut owner, addr) = owner(&dir, &["--serve"]);
    let raw = RawNewcomer::join(dir.path());
    let mut request = vec![0x42];
    request.extend(frame(b"{\"version\":7}\n"));
    (&raw.stream).write_all(&request).unwrap();
    assert_eq!(raw.read_to_eof(), b"", "the owner must not step down for a version it does not speak");
    drop(raw);

    assert_hello(http_get(&addr, "/"), "owner");
    let listen = format!("web=tcp:{addr}");
    let mut next = Peer::start(dir.path(), &["--id", "next", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
}

#[test]
fn silent_newcomer_is_dropped_at_the_upgrade_timeout() {
    let dir = TestDir::new();
    let (mut owner, addr) = owner(&dir, &["--serve", "--upgrade-timeout-ms", "300"]);
    let raw = RawNewcomer::join(dir.path());
    // The newcomer says nothing: the owner closes the session at its timeout.
    assert_eq!(raw.read_to_eof(), b"");
    drop(raw);
    assert_hello(http_get(&addr, "/"), "owner");
    assert!(owner.is_running());

    let listen = format!("web=tcp:{addr}");
    let mut next = Peer::start(dir.path(), &["--id", "next", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    assert_hello(http_get(&addr, "/"), "next");
}

#[test]
fn version_0_owner_hands_over() {
    let dir = TestDir::new();
    let fake = FakeOwner::new(dir.path());
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = web.local_addr().unwrap().to_string();

    let mut peer = Peer::start(dir.path(), &["--id", "newbie", "--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let stream = fake.accept();
    let list =
        format!("[{{\"kind\":\"listener\",\"id\":\"web\",\"network\":\"tcp\",\"addr\":\"{addr}\"}}]\n");
    (&stream).write_all(&frame(list.as_bytes())).unwrap();
    send_fd(&stream, &format!("listener(web): tcp:{addr}"), web.as_fd());

    let mut ready = Vec::new();
    (&stream).read_to_end(&mut ready).unwrap();
    assert_eq!(ready, [0x2A], "a version 0 owner gets the version 0 ready byte and nothing else");

    assert_eq!(inherited_ids(&peer.wait_for("inherited")), ["web"]);
    assert_eq!(listen_addr(&peer.wait_for("listening"), "web"), addr);
    peer.wait_for("ready");
    assert_eq!(dir.owner(), "newbie");
    assert_hello(http_get(&addr, "/"), "newbie");
}

/// The bytes of the appendix of PROTOCOL.md, captured from a Go tableroll v2.0.0 owner, with
/// a file entry in the older Go writer's style.
#[test]
fn go_version_1_owner_hands_over() {
    let dir = TestDir::new();
    let fake = FakeOwner::new(dir.path());
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = web.local_addr().unwrap().to_string();
    let log = std::fs::File::create(dir.join("log")).unwrap();

    let mut peer = Peer::start(dir.path(), &["--id", "rusty", "--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let stream = fake.accept();
    let list = format!(
        "\t [{{\"kind\":\"listener\",\"id\":\"web\",\"network\":\"tcp\",\"addr\":\"{addr}\"}},\
         {{\"kind\":\"file\",\"id\":\"log\",\"network\":\"\",\"addr\":\"\"}}]\n"
    );
    (&stream).write_all(&frame(list.as_bytes())).unwrap();
    send_fd(&stream, &format!("listener(web): tcp:{addr}"), web.as_fd());
    send_fd(&stream, "log", log.as_fd());

    let mut request = [0u8; 19];
    (&stream).read_exact(&mut request).unwrap();
    assert_eq!(&request, b"\x42\x00\x00\x00\x0e{\"version\":1}\n", "{:?}", String::from_utf8_lossy(&request));
    (&stream).write_all(b"\x00\x00\x00\x18{\"msg\":\"stepping down\"}\n").unwrap();
    let mut rest = Vec::new();
    (&stream).read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "nothing after the handshake");

    assert_eq!(inherited_ids(&peer.wait_for("inherited")), ["log", "web"]);
    peer.wait_for("ready");
    assert_eq!(dir.owner(), "rusty");
    assert_hello(http_get(&addr, "/"), "rusty");
}

/// An owner that breaks the protocol: the newcomer fails (error event, exit status 1) instead
/// of hanging, allocating what the owner asks for, or becoming owner.
#[test]
fn malformed_owners_are_refused() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = web.local_addr().unwrap().to_string();
    let entry =
        format!("[{{\"kind\":\"listener\",\"id\":\"web\",\"network\":\"tcp\",\"addr\":\"{addr}\"}}]\n");
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("huge frame length", vec![0x7f, 0xff, 0xff, 0xff], false),
        ("negative frame length", vec![0xff, 0xff, 0xff, 0xfe], false),
        ("version prefix over 32 bits", frame(format!("{}{entry}", " \t".repeat(9)).as_bytes()), false),
        ("truncated JSON", frame(b"\t [{\"kind\":\n"), false),
        ("descriptor message without a descriptor", frame(entry.as_bytes()), true),
    ];
    for (what, bytes, plain_payload) in cases {
        let dir = TestDir::new();
        let fake = FakeOwner::new(dir.path());
        let mut peer = Peer::start(dir.path(), &["--id", "victim", "--listen", "web=tcp:127.0.0.1:0"]);
        let stream = fake.accept();
        (&stream).write_all(&bytes).unwrap();
        if plain_payload {
            (&stream).write_all(format!("listener(web): tcp:{addr}").as_bytes()).unwrap();
        }
        let event = peer.wait_for("error");
        if peer.wait_exit().code() != Some(1) {
            peer.fail(&format!("{what}: expected exit status 1 after {event}"));
        }
        assert_eq!(dir.owner(), "fake", "{what}: the newcomer must not become owner");
    }
}

#[test]
fn connect_timeout_bounds_a_silent_owner_and_a_held_lock() {
    let dir = TestDir::new();
    let fake = FakeOwner::new(dir.path());
    let mut peer = Peer::start(dir.path(), &["--id", "patient", "--connect-timeout-ms", "300"]);
    let _silent = fake.accept();
    let message = peer.expect_error_exit();
    assert!(message.contains("timed out"), "{message}");
    assert_eq!(dir.owner(), "fake");

    // Another newcomer holds the lock and never lets go.
    let _lock = take_lock(dir.path());
    let mut peer = Peer::start(dir.path(), &["--id", "patient", "--connect-timeout-ms", "300"]);
    let message = peer.expect_error_exit();
    assert!(message.contains("timed out"), "{message}");
    assert_eq!(dir.owner(), "fake");
}

#[test]
fn owner_file_naming_a_path_outside_the_directory_is_refused() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("inner")).unwrap();
    let _decoy = std::os::unix::net::UnixListener::bind(dir.join("decoy.sock")).unwrap();
    std::fs::write(dir.join("inner/pid"), "../decoy").unwrap();
    let inner = dir.join("inner");
    let mut peer = Peer::start(&inner, &["--id", "careful"]);
    let message = peer.expect_error_exit();
    assert!(message.contains("../decoy"), "{message}");
    assert_eq!(std::fs::read_to_string(inner.join("pid")).unwrap(), "../decoy");
}
