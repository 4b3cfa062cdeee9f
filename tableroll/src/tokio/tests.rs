//! The draining listener, its streams and `Drained` together, on real sockets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::draining_stream::H2_PREFACE;
use super::DrainingListener;

/// Bounds every wait, to turn a hang into a failure.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Long enough never to be what ends a test's drain.
const NEVER: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| panic!("timed out {what}"))
}

/// A drain signal and the switch that fires it.
fn drain_signal() -> (oneshot::Sender<()>, impl Future<Output = ()> + Send + 'static) {
    let (fire, fired) = oneshot::channel::<()>();
    (fire, async move {
        let _ = fired.await;
    })
}

/// Polls once, without waiting.
fn is_pending(future: &mut (impl Future + Unpin)) -> bool {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop())).is_pending()
}

async fn tcp_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback listener")
}

#[test]
fn a_connection_accepted_before_the_drain_and_read_after_it_holds_drained_until_read() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(tcp, signal).first_byte_timeout(NEVER);
        let mut drained = listener.drained();

        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, peer) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        assert_eq!(peer, client.local_addr().unwrap());
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        assert!(listener.is_draining());
        assert!(is_pending(&mut drained), "drained with a connection not read from");

        // The request comes after the drain signal; until it is read, the drain waits.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(is_pending(&mut drained), "drained before the bytes that came were read");
        let mut request = [0u8; 18];
        within("reading the request", conn.read_exact(&mut request)).await.unwrap();
        within("drained after the first read", &mut drained).await;

        // And the connection is served to the end.
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(conn);
        let mut response = Vec::new();
        within("the response", client.read_to_end(&mut response)).await.unwrap();
        assert_eq!(response, b"HTTP/1.1 200 OK\r\n\r\n");
    });
}

#[test]
fn a_connection_that_sends_nothing_holds_drained_only_for_the_first_byte_timeout() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(tcp, signal).first_byte_timeout(Duration::from_millis(50));
        let drained = listener.drained();

        let _silent = TcpStream::connect(addr).await.unwrap();
        let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        within("drained after the first-byte timeout", drained).await;
        // Still open and never read: only the timeout can have ended the wait.
        assert_eq!(listener.progress.borrow().unread, 1);
        drop(conn);
    });
}

#[test]
fn after_the_drain_signal_nothing_more_is_accepted() {
    runtime().block_on(async {
        // Two descriptors for one socket, as the old and the new owner hold after a handoff.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let next_owner_copy = std_listener.try_clone().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let next_owner = TcpListener::from_std(next_owner_copy).unwrap();
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(TcpListener::from_std(std_listener).unwrap(), signal);

        // Queued before the signal is seen: the signal goes first.
        let early = TcpStream::connect(addr).await.unwrap();
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        let late = TcpStream::connect(addr).await.unwrap();
        assert!(within("accepting after the drain", listener.accept()).await.unwrap().is_none());

        // Both stayed queued on the socket for the next owner.
        for client in [early, late] {
            let (_, peer) = within("the next owner accepting", next_owner.accept()).await.unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
        }
        within("drained with nothing accepted", listener.drained()).await;
    });
}

#[test]
fn connections_that_close_or_are_dropped_unread_count_as_read_on_a_unix_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let mut listener =
            DrainingListener::new(UnixListener::bind(&path).unwrap(), signal).first_byte_timeout(NEVER);
        let mut drained = listener.drained();
        let _first = UnixStream::connect(&path).await.unwrap();
        let (dropped, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        let second = UnixStream::connect(&path).await.unwrap();
        let (mut closed, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());

        drop(dropped);
        assert!(is_pending(&mut drained), "drained with a connection not read from");
        drop(second);
        let mut rest = Vec::new();
        within("reading to the end", closed.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty());
        within("drained", drained).await;
    });
}

#[test]
fn a_stream_starting_with_the_http2_preface_counts_as_read_once_the_preface_is_complete() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(tcp, signal).first_byte_timeout(NEVER);
        let mut drained = listener.drained();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());

        let (start, end) = H2_PREFACE.split_at(16);
        client.write_all(start).await.unwrap();
        let mut buf = vec![0u8; start.len()];
        within("reading the preface's start", conn.read_exact(&mut buf)).await.unwrap();
        assert!(is_pending(&mut drained), "drained in the middle of the preface");
        client.write_all(end).await.unwrap();
        let mut buf = vec![0u8; end.len()];
        within("reading the preface's end", conn.read_exact(&mut buf)).await.unwrap();
        within("drained", drained).await;
    });
}

/// Without a drain signal: the listener's end starts the drain, first-byte timeout included.
#[test]
fn a_dropped_listener_counts_as_told_to_drain() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let mut listener =
            DrainingListener::new(tcp, std::future::pending()).first_byte_timeout(Duration::from_millis(50));
        let drained = listener.drained();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        drop(listener);
        within("drained after the first-byte timeout", drained).await;
        drop(conn);
    });
}

/// With the `axum` feature the listener goes to `axum::serve`, and `drained` to its graceful
/// shutdown; `tap_io` gives it `ConnectInfo`.
#[cfg(feature = "axum")]
#[test]
fn axum_serves_through_it_with_connect_info_and_stops_once_drained() {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;
    use axum::serve::ListenerExt;

    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let listener = DrainingListener::new(tcp, signal);
        let drained = listener.drained();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener.tap_io(|_| ()), app).with_graceful_shutdown(drained);
        let server = tokio::spawn(async move { server.await });

        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        within("the response", client.read_to_end(&mut response)).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
        assert!(response.ends_with(&client.local_addr().unwrap().to_string()), "{response:?}");

        fire.send(()).unwrap();
        within("the server to shut down", server).await.unwrap().unwrap();
    });
}
