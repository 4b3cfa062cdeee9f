//! The client's accounting against scripted one-thread servers.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread;

use super::*;
use crate::drill::http::{read_head, write_response};

fn config(target: Target, keep_alive: bool) -> LoadConfig {
    LoadConfig { target, clients: 1, keep_alive, timeout: Duration::from_secs(5), origin_ns: sys::now_ns() }
}

/// A server on a new port whose connections are handled one after another by `script`
/// (given each connection's number); it stops after `connections` of them.
fn scripted(connections: usize, script: impl Fn(usize, TcpStream) + Send + 'static) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = Target::Tcp(listener.local_addr().unwrap());
    thread::spawn(move || {
        for i in 0..connections {
            let (conn, _) = listener.accept().unwrap();
            script(i, conn);
        }
    });
    target
}

/// Reads one request head from `conn`.
fn read_request(conn: &mut TcpStream) {
    read_head(conn, &mut Vec::new()).unwrap();
}

fn answer(conn: &mut TcpStream, close: bool) {
    read_request(conn);
    write_response(conn, "200 OK", "generation 0\n", close).unwrap();
}

#[test]
fn a_request_per_connection_succeeds() {
    let target = scripted(2, |_, mut conn| answer(&mut conn, true));
    let mut client = Client::new(config(target, false));
    client.request().unwrap();
    client.request().unwrap();
    assert!(client.conn.is_none());
}

#[test]
fn a_kept_connection_closed_between_requests_is_replaced_without_a_failure() {
    let target = scripted(2, |i, mut conn| {
        answer(&mut conn, false);
        if i == 1 {
            answer(&mut conn, false);
        }
    });
    let mut client = Client::new(config(target, true));
    client.request().unwrap();
    // Wait until the server's close has arrived, as it would between two requests.
    let kept = client.conn.as_ref().expect("the connection is kept");
    sys::wait_readable(&[kept.as_fd()], None).unwrap();
    client.request().unwrap();
    client.request().unwrap();
    assert_eq!(client.stats.reconnects, 1);
}

#[test]
fn a_connection_closed_after_the_request_was_sent_is_a_failure() {
    let target = scripted(1, |_, mut conn| read_request(&mut conn));
    let mut client = Client::new(config(target, true));
    let failure = client.request().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Closed, "{failure:?}");
}

#[test]
fn a_reset_is_a_reset() {
    let target = scripted(1, |_, mut conn| {
        read_request(&mut conn);
        sys::reset_on_close(&conn).unwrap();
    });
    let failure = Client::new(config(target, false)).request().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Reset, "{failure:?}");
}

#[test]
fn a_server_error_is_a_bad_response() {
    let target = scripted(1, |_, mut conn| {
        read_request(&mut conn);
        write_response(&mut conn, "500 Oops", "generation 0\n", true).unwrap();
    });
    let failure = Client::new(config(target, false)).request().unwrap_err();
    assert_eq!(failure.kind, FailureKind::BadResponse, "{failure:?}");
    assert!(failure.message.contains("500"));
}

#[test]
fn a_silent_server_is_a_timeout() {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let target = scripted(1, move |_, mut conn| {
        read_request(&mut conn);
        let _ = done_rx.recv(); // hold the connection open until the client has given up
    });
    let mut config = config(target, false);
    config.timeout = Duration::from_millis(50);
    let failure = Client::new(config).request().unwrap_err();
    drop(done_tx);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
}

#[test]
fn nobody_listening_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Unix(dir.path().join("nobody.sock"));
    let failure = Client::new(config(target, false)).request().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Refused, "{failure:?}");
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let failure = Client::new(config(Target::Tcp(gone), false)).request().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Refused, "{failure:?}");
}

#[test]
fn io_errors_are_classified() {
    let kind = |k: ErrorKind| classify("reading", &io::Error::from(k));
    assert_eq!(kind(ErrorKind::ConnectionRefused), FailureKind::Refused);
    assert_eq!(kind(ErrorKind::ConnectionReset), FailureKind::Reset);
    assert_eq!(kind(ErrorKind::BrokenPipe), FailureKind::Reset);
    assert_eq!(kind(ErrorKind::WouldBlock), FailureKind::Timeout);
    assert_eq!(kind(ErrorKind::TimedOut), FailureKind::Timeout);
    assert_eq!(kind(ErrorKind::UnexpectedEof), FailureKind::Closed);
    assert_eq!(kind(ErrorKind::NotFound), FailureKind::Other);
    assert_eq!(classify("connecting", &io::Error::from(ErrorKind::NotFound)), FailureKind::Refused);
    assert_eq!(kind(ErrorKind::AddrNotAvailable), FailureKind::Other);
}

#[test]
fn the_load_counts_every_request_once() {
    let (answered_tx, answered) = std::sync::mpsc::channel();
    let target = scripted(usize::MAX, move |i, mut conn| {
        answer(&mut conn, true);
        let _ = answered_tx.send(i);
    });
    let load = Load::start(&config(target, false)).unwrap();
    // Let it run for 20 requests (the bound only fails a hung test).
    for _ in 0..20 {
        answered.recv_timeout(Duration::from_secs(30)).expect("the load sends requests");
    }
    let stats = load.finish();
    assert!(stats.sent >= 20);
    assert_eq!(stats.sent, stats.succeeded + stats.failures.total());
    assert_eq!(stats.failures.total(), 0, "{:?}", stats.examples);
    assert_eq!(stats.buckets.ok.iter().sum::<u64>(), stats.succeeded);
    assert_eq!(stats.latencies_us.len() as u64, stats.succeeded);
}
