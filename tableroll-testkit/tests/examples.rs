//! The std_http, unix_socket and connection_handover examples upgraded as real processes: the
//! old generation serves, a new one takes over, the old one drains and exits 0, the new one
//! serves. For connection_handover, the backend connection and the log file must be the very
//! ones the first generation opened.

mod example_process;
mod util;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;

use example_process::{args, expect_upload_answered_by, upgrade_with_upload_in_flight, Example};
use util::{assert_hello, http_get, http_get_unix, TestDir, TIMEOUT};

#[test]
fn std_http_hands_over_and_drains_a_request_in_flight() {
    let dir = TestDir::new();
    let coord = dir.join("coord");
    let mut old = Example::start("std_http", &args(&coord, &["127.0.0.1:0"]));
    let addr = old.wait_for("ready").get("addr").to_string();
    assert_hello(http_get(&addr, "/"), &old.pid().to_string());
    let (new, upload) = upgrade_with_upload_in_flight(&mut old, &addr, || {
        Example::start("std_http", &args(&coord, &["127.0.0.1:0"]))
    });
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());

    expect_upload_answered_by(upload, &mut old, "2");
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());
}

#[test]
fn unix_socket_hands_over_the_same_socket_at_the_same_path() {
    let dir = TestDir::new();
    let coord = dir.join("coord");
    let socket = dir.join("app.sock");
    let socket_arg = socket.to_str().expect("a UTF-8 test directory");
    let mut old = Example::start("unix_socket", &args(&coord, &[socket_arg]));
    assert_eq!(old.wait_for("ready").get("path"), socket_arg);
    let inode = fs::metadata(&socket).expect("the socket's path").ino();
    assert_hello(http_get_unix(&socket, "/"), &old.pid().to_string());

    let mut new = Example::start("unix_socket", &args(&coord, &[socket_arg]));
    assert_eq!(new.wait_for("ready").get("path"), socket_arg);
    old.wait_for("draining");
    assert_eq!(old.expect_clean_exit().get("served"), "1");

    // Not unlinked and bound anew: the same socket file all along.
    let after = fs::metadata(&socket).expect("the socket's path after the old generation exited");
    assert_eq!(after.ino(), inode, "the socket at {} was replaced", socket.display());
    assert_hello(http_get_unix(&socket, "/"), &new.pid().to_string());
}

#[test]
fn connection_handover_keeps_the_backend_connection_and_the_log_file() {
    let dir = TestDir::new();
    let coord = dir.join("coord");
    let log = dir.join("requests.log");
    let backend = TcpListener::bind("127.0.0.1:0").expect("binding the backend");
    // Non-blocking: each generation connects (or not) before it prints `ready`, so after that
    // line a connection is either queued already or will never come.
    backend.set_nonblocking(true).expect("set_nonblocking");
    let backend_addr = backend.local_addr().expect("the backend's address").to_string();
    let log_arg = log.to_str().expect("a UTF-8 test directory");
    let example_args = args(&coord, &["127.0.0.1:0", &backend_addr, log_arg]);

    let mut old = Example::start("connection_handover", &example_args);
    let ready = old.wait_for("ready");
    assert_eq!((ready.get("backend"), ready.get("log")), ("new", "new"), "{}", ready.raw);
    let addr = ready.get("addr").to_string();
    let mut upstream = accept_upstream(&backend);
    upstream.expect(&format!("hello pid={}", old.pid()));
    assert_hello(http_get(&addr, "/"), &old.pid().to_string());
    upstream.expect(&format!("request pid={} n=1", old.pid()));
    // Rotated away without telling anyone: only a process holding the open file still writes
    // to it; one that opened the path would create a new file there.
    let rotated = dir.join("requests.log.1");
    fs::rename(&log, &rotated).expect("renaming the log");

    let mut new = Example::start("connection_handover", &example_args);
    let ready = new.wait_for("ready");
    assert_eq!((ready.get("backend"), ready.get("log")), ("inherited", "inherited"), "{}", ready.raw);
    assert_eq!(ready.get("addr"), addr);
    old.wait_for("draining");
    assert_eq!(old.expect_clean_exit().get("served"), "1");
    // The old generation's copies are closed; the connection is still up, and the new
    // generation talks on it.
    upstream.expect(&format!("hello pid={}", new.pid()));
    assert_hello(http_get(&addr, "/"), &new.pid().to_string());
    upstream.expect(&format!("request pid={} n=1", new.pid()));

    match backend.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the backend got a second connection: {other:?}"),
    }
    assert!(!log.exists(), "a generation opened the log's path instead of using the open file");
    let expected = format!("request pid={} n=1\nrequest pid={} n=1\n", old.pid(), new.pid());
    assert_eq!(fs::read_to_string(&rotated).expect("reading the rotated log"), expected);
}

/// The backend's end of the connection a generation opened.
struct Upstream {
    lines: BufReader<TcpStream>,
}

impl Upstream {
    /// Reads the next line (waiting at most [`TIMEOUT`]) and checks it is `expected`.
    #[track_caller]
    fn expect(&mut self, expected: &str) {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) => panic!("the backend connection closed; expected {expected:?}"),
            Ok(_) => assert_eq!(line.trim_end(), expected, "on the backend connection"),
            Err(e) => panic!("reading the backend connection, expecting {expected:?}: {e}"),
        }
    }
}

/// The connection the first generation opened before it printed `ready`.
fn accept_upstream(backend: &TcpListener) -> Upstream {
    let (conn, _) = backend.accept().expect("the first generation connected to the backend before ready");
    conn.set_nonblocking(false).expect("set_nonblocking");
    conn.set_read_timeout(Some(TIMEOUT)).expect("set_read_timeout");
    Upstream { lines: BufReader::new(conn) }
}
