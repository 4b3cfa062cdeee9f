//! Handoffs between real peer processes: requests in flight, chains, many listeners, many
//! newcomers at once, unclaimed descriptors.

mod util;

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use util::{
    assert_hello, hand_over_many, http_get, http_get_unix, inherited_ids, listen_addr, raise_nofile_limit,
    read_response, serving, tcp_listen_ports, Peer, TestDir, TIMEOUT,
};

/// Starts a serving owner with one TCP listener `web`, the first of its group; returns it and
/// the listener's address.
fn tcp_owner(dir: &TestDir, id: &str) -> (Peer, String) {
    let (owner, addr) = serving(dir, id, "127.0.0.1:0", &[]);
    assert_eq!(inherited_ids(&owner.printed()[0]), Vec::<String>::new());
    (owner, addr)
}

#[test]
fn tcp_handoff_finishes_request_in_flight() {
    let dir = TestDir::new();
    let (mut old, addr) = tcp_owner(&dir, "old");

    // A request whose head is not complete yet: in flight on the old process until the test
    // finishes it, which it does only after the upgrade completed.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.write_all(b"GET /slow?ms=100 HTTP/1.1\r\nHost: test\r\n").unwrap();
    // The old process is the only one accepting and accepts in order: once it answered this
    // later connection, it has accepted the slow one.
    assert_hello(http_get(&addr, "/"), "old");

    let listen = format!("web=tcp:{addr}");
    let mut new = Peer::start(dir.path(), &["--id", "new", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&new.wait_for("inherited")), ["web"]);
    assert_eq!(listen_addr(&new.wait_for("listening"), "web"), addr);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    assert_eq!(dir.owner(), "new");

    // The old one stopped accepting before it reported upgrade_complete.
    for _ in 0..5 {
        assert_hello(http_get(&addr, "/"), "new");
    }
    if !old.is_running() {
        old.fail("the old process exited with a request in flight");
    }

    slow.write_all(b"\r\n").unwrap();
    let response =
        read_response(&slow).unwrap_or_else(|e| old.fail(&format!("the slow request failed: {e}")));
    assert_eq!((response.status, response.body.as_str()), (200, "hello from old\n"));
    assert_eq!(old.expect_clean_exit(), 2, "the old process served the probe and the slow request");
    assert_hello(http_get(&addr, "/"), "new");
}

#[test]
fn chain_of_ten_over_a_unix_listener() {
    let dir = TestDir::new();
    let socket = dir.join("app.sock");
    let listen = format!("app=unix:{}", socket.display());
    let start = |id: &str| Peer::start(dir.path(), &["--id", id, "--listen", &listen, "--serve"]);

    let mut current = start("p0");
    assert_eq!(inherited_ids(&current.wait_for("inherited")), Vec::<String>::new());
    assert_eq!(listen_addr(&current.wait_for("listening"), "app"), socket.to_str().unwrap());
    current.wait_for("ready");

    // A client that keeps sending requests for the whole chain: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, socket) = (stop.clone(), socket.clone());
        thread::spawn(move || {
            let (mut ok, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match http_get_unix(&socket, "/") {
                    Ok(r) if r.status == 200 && r.body.starts_with("hello from p") => ok += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (ok, failures)
        })
    };

    for i in 1..10 {
        let id = format!("p{i}");
        let mut next = start(&id);
        assert_eq!(inherited_ids(&next.wait_for("inherited")), ["app"], "{}", next.diagnostics());
        next.wait_for("ready");
        current.wait_for("upgrade_complete");
        assert_hello(http_get_unix(&socket, "/"), &id);
        current.expect_clean_exit();
        assert_eq!(dir.owner(), id);
        current = next;
    }

    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(ok > 0, "the background client got no answer at all");
    assert!(socket.exists(), "the Unix listener's path was unlinked");
    let expected: BTreeSet<String> = ["app.sock", "p9.sock", "pid"].map(String::from).into();
    assert_eq!(dir.entries(), expected, "only the live process's upgrade socket may remain");
}

#[test]
fn thousand_listeners_in_one_handoff() {
    const N: usize = 1000;
    raise_nofile_limit(4 * N as u64 + 256);
    let dir = TestDir::new();
    let many = N.to_string();
    let old = Peer::start(dir.path(), &["--id", "old", "--many", &many]);
    hand_over_many(&dir, N, old, || Peer::start(dir.path(), &["--id", "new", "--many", &many]));
}

#[test]
fn five_newcomers_at_once_take_over_in_turn() {
    let dir = TestDir::new();
    let (owner, addr) = tcp_owner(&dir, "n0");
    let listen = format!("web=tcp:{addr}");
    let mut peers = vec![owner];
    for i in 1..=5 {
        peers.push(Peer::start(dir.path(), &["--id", &format!("n{i}"), "--listen", &listen, "--serve"]));
    }
    for peer in &mut peers[1..] {
        assert_eq!(inherited_ids(&peer.wait_for("inherited")), ["web"], "{}", peer.diagnostics());
        peer.wait_for("ready");
    }

    // Each wrote its id on ready, under the lock: the owner file names the last one.
    let last = dir.owner();
    let survivor =
        peers.iter().position(|p| p.label == last).unwrap_or_else(|| panic!("owner file names {last:?}"));
    for (i, peer) in peers.iter_mut().enumerate() {
        if i != survivor {
            peer.wait_for("upgrade_complete");
            peer.expect_clean_exit();
        }
    }
    let survivor = &mut peers[survivor];
    if !survivor.is_running() || survivor.has_pending("upgrade_complete") {
        survivor.fail("the last ready newcomer should still be the owner");
    }
    assert_hello(http_get(&addr, "/"), &last);
    assert_eq!(dir.owner(), last);
}

#[test]
fn unclaimed_inherited_listeners_are_closed() {
    let dir = TestDir::new();
    let mut old = Peer::start(
        dir.path(),
        &["--id", "old", "--listen", "a=tcp:127.0.0.1:0", "--listen", "b=tcp:127.0.0.1:0", "--serve"],
    );
    let listening = old.wait_for("listening");
    let (a, b) = (listen_addr(&listening, "a"), listen_addr(&listening, "b"));
    old.wait_for("ready");
    assert_hello(http_get(&b, "/"), "old");

    let listen = format!("a=tcp:{a}");
    let mut new = Peer::start(dir.path(), &["--id", "new", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&new.wait_for("inherited")), ["a", "b"]);
    new.wait_for("ready");
    old.wait_for("upgrade_complete");
    old.expect_clean_exit();

    let b_port: u16 = b.rsplit(':').next().unwrap().parse().unwrap();
    assert!(!tcp_listen_ports(new.pid()).contains(&b_port), "the newcomer still holds b");
    match TcpStream::connect(&b) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => {
            new.fail(&format!("connecting to the unclaimed listener b: expected refused, got {other:?}"))
        }
    }
    assert_hello(http_get(&a, "/"), "new");
}

#[test]
fn an_id_in_use_by_a_live_process_is_refused() {
    let dir = TestDir::new();
    let (mut owner, addr) = tcp_owner(&dir, "same");
    let listen = format!("web=tcp:{addr}");
    let mut twin = Peer::start(dir.path(), &["--id", "same", "--listen", &listen, "--serve"]);
    let message = twin.expect_error_exit();
    assert!(message.contains("in use"), "{message}");

    // The live process's upgrade socket is untouched: it still hands over.
    assert!(dir.join("same.sock").exists(), "the live process's upgrade socket was removed");
    assert_eq!(dir.owner(), "same");
    assert_hello(http_get(&addr, "/"), "same");
    let mut next = Peer::start(dir.path(), &["--id", "next", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
}
