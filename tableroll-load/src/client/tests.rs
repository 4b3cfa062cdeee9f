//! The client's accounting against scripted one-thread servers.

use std::net::{TcpListener, TcpStream};
use std::thread;

use rustix::event::{poll, PollFd, PollFlags};

use super::*;
use crate::http::{read_head, write_response};

fn client(target: Target, keep_alive: bool) -> Client {
    Client::new(target, keep_alive, Duration::from_secs(5))
}

/// The body check of these tests: `generation N`.
fn generation(body: &[u8]) -> Result<(), String> {
    body.starts_with(b"generation ").then_some(()).ok_or_else(|| "an unexpected response body".into())
}

/// A server on a new port whose connections are handled one after another by `script`
/// (given each connection's number); it stops after `connections` of them.
fn scripted(connections: usize, script: impl Fn(usize, TcpStream) + Send + 'static) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = Target::Tcp(listener.local_addr().unwrap().to_string());
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

/// How the one request of a client fails against a server that handles its one connection
/// with `script`.
fn failure_of(keep_alive: bool, script: impl Fn(usize, TcpStream) + Send + 'static) -> Failure {
    client(scripted(1, script), keep_alive).request(generation).unwrap_err()
}

fn answer(conn: &mut TcpStream, close: bool) {
    read_request(conn);
    write_response(conn, "200 OK", "generation 0\n", close).unwrap();
}

#[test]
fn a_request_per_connection_succeeds() {
    let target = scripted(2, |_, mut conn| answer(&mut conn, true));
    let mut client = client(target, false);
    client.request(generation).unwrap();
    client.request(generation).unwrap();
    assert!(!client.has_connection());
}

#[test]
fn a_kept_connection_closed_between_requests_is_replaced_without_a_failure() {
    let target = scripted(2, |i, mut conn| {
        answer(&mut conn, false);
        if i == 1 {
            answer(&mut conn, false);
        }
    });
    let mut client = client(target, true);
    client.request(generation).unwrap();
    // Wait until the server's close has arrived, as it would between two requests.
    let kept = client.conn.as_ref().expect("the connection is kept");
    poll(&mut [PollFd::new(kept, PollFlags::IN | PollFlags::RDHUP)], None).unwrap();
    client.request(generation).unwrap();
    client.request(generation).unwrap();
    assert_eq!(client.reconnects(), 1);
}

#[test]
fn a_connection_closed_after_the_request_was_sent_is_a_failure() {
    let failure = failure_of(true, |_, mut conn| read_request(&mut conn));
    assert_eq!(failure.kind, FailureKind::Closed, "{failure:?}");
}

#[test]
fn a_reset_is_a_reset() {
    let failure = failure_of(false, |_, mut conn| {
        read_request(&mut conn);
        rustix::net::sockopt::set_socket_linger(&conn, Some(Duration::ZERO)).unwrap();
    });
    assert_eq!(failure.kind, FailureKind::Reset, "{failure:?}");
}

#[test]
fn a_server_error_is_a_bad_response() {
    let failure = failure_of(false, |_, mut conn| {
        read_request(&mut conn);
        write_response(&mut conn, "500 Oops", "generation 0\n", true).unwrap();
    });
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
    let failure = Client::new(target, false, Duration::from_millis(50)).request(generation).unwrap_err();
    drop(done_tx);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure:?}");
}

#[test]
fn nobody_listening_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Unix(dir.path().join("nobody.sock"));
    let failure = client(target, false).request(generation).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Refused, "{failure:?}");
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let failure = client(Target::Tcp(gone.to_string()), false).request(generation).unwrap_err();
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
fn the_caller_checks_the_body() {
    let target = scripted(2, |_, mut conn| answer(&mut conn, true));
    let mut client = client(target, false);
    let failure = client.request(|body| Err::<(), _>(format!("{} bytes", body.len()))).unwrap_err();
    assert_eq!((failure.kind, failure.message.as_str()), (FailureKind::BadResponse, "13 bytes"));
    assert_eq!(client.request(|body| Ok(body.to_vec())).unwrap(), b"generation 0\n");
}
