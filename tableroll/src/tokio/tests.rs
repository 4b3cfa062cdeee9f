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
        let mut listener =
            DrainingListener::new(tcp, signal).request_head_timeout(NEVER).keep_alive_grace(Duration::ZERO);
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
fn a_connection_that_sends_nothing_holds_drained_only_for_the_request_head_timeout() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(tcp, signal)
            .request_head_timeout(Duration::from_millis(50))
            .keep_alive_grace(Duration::ZERO);
        let drained = listener.drained();

        let _silent = TcpStream::connect(addr).await.unwrap();
        let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        within("drained after the request-head timeout", drained).await;
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
        let mut listener = DrainingListener::new(UnixListener::bind(&path).unwrap(), signal)
            .request_head_timeout(NEVER)
            .keep_alive_grace(Duration::ZERO);
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
fn an_http2_connection_counts_as_read_once_its_first_headers_frame_is_read() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener =
            DrainingListener::new(tcp, signal).request_head_timeout(NEVER).keep_alive_grace(NEVER);
        let mut drained = listener.drained();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());

        // The preface, in two parts, and a SETTINGS frame: no request yet.
        let (start, end) = H2_PREFACE.split_at(16);
        let settings = [end, &HTTP2_EMPTY_SETTINGS[..]].concat();
        for (what, bytes) in [("the preface's start", start), ("its end and SETTINGS", &settings[..])] {
            client.write_all(bytes).await.unwrap();
            let mut buf = vec![0u8; bytes.len()];
            within(what, conn.read_exact(&mut buf)).await.unwrap();
            assert!(is_pending(&mut drained), "drained after {what}, before any request");
        }
        // A HEADERS frame: the first request. HTTP/2 is not waited for after that.
        client.write_all(&HTTP2_HEADERS_FRAME).await.unwrap();
        let mut buf = [0u8; HTTP2_HEADERS_FRAME.len()];
        within("reading the HEADERS frame", conn.read_exact(&mut buf)).await.unwrap();
        within("drained", drained).await;
    });
}

/// An empty SETTINGS frame, as a client sends after the preface.
const HTTP2_EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
/// A HEADERS frame on stream 1 with a three-byte header block.
const HTTP2_HEADERS_FRAME: [u8; 12] = [0, 0, 3, 0x1, 0x4, 0, 0, 0, 1, 0x82, 0x86, 0x84];

/// Without a drain signal: the listener's end starts the drain, request-head timeout included.
#[test]
fn a_dropped_listener_counts_as_told_to_drain() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let mut listener = DrainingListener::new(tcp, std::future::pending())
            .request_head_timeout(Duration::from_millis(50))
            .keep_alive_grace(Duration::ZERO);
        let drained = listener.drained();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
        drop(listener);
        within("drained after the request-head timeout", drained).await;
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

/// The next item of the listener as a `Stream`.
async fn next_connection(
    listener: &mut DrainingListener<TcpListener>,
) -> Option<super::DrainingStream<TcpStream>> {
    use futures_core::Stream;
    let item = std::future::poll_fn(|cx| Pin::new(&mut *listener).poll_next(cx)).await;
    item.map(|conn| conn.unwrap_or_else(|never| match never {}))
}

#[test]
fn as_a_stream_it_ends_only_once_every_connection_accepted_was_read_from() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let mut listener =
            DrainingListener::new(tcp, signal).request_head_timeout(NEVER).keep_alive_grace(Duration::ZERO);

        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut conn =
            within("the first connection", next_connection(&mut listener)).await.expect("accepted");
        assert_eq!(conn.get_ref().peer_addr().unwrap(), client.local_addr().unwrap());
        fire.send(()).unwrap();
        // Stopped, but the connection accepted has not been read from: the stream must not end.
        let mut end = Box::pin(next_connection(&mut listener));
        assert!(is_pending(&mut end), "the stream ended before the connection accepted was read from");

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        within("reading the request", conn.read_exact(&mut request)).await.unwrap();
        assert!(within("the end of the stream", end).await.is_none());
        assert!(within("the stream after its end", next_connection(&mut listener)).await.is_none());
    });
}

#[test]
fn tcp_nodelay_is_set_on_accepted_connections_only_when_asked() {
    runtime().block_on(async {
        for nodelay in [false, true] {
            let tcp = tcp_listener().await;
            let addr = tcp.local_addr().unwrap();
            let mut listener = DrainingListener::new(tcp, std::future::pending()).tcp_nodelay(nodelay);
            let _client = TcpStream::connect(addr).await.unwrap();
            let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
            assert_eq!(conn.get_ref().nodelay().unwrap(), nodelay);
            let _client = TcpStream::connect(addr).await.unwrap();
            let conn = within("the stream", next_connection(&mut listener)).await.expect("accepted");
            assert_eq!(conn.get_ref().nodelay().unwrap(), nodelay);
        }
    });
}

/// A current-thread runtime whose clock stands still and jumps to the next timer whenever
/// nothing else can run: timeouts are tested without waiting for them.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
}

/// A listener on loopback with a connected client and its accepted connection.
async fn one_connection(
    signal: impl Future<Output = ()> + Send + 'static,
    configure: impl FnOnce(DrainingListener<TcpListener>) -> DrainingListener<TcpListener>,
) -> (DrainingListener<TcpListener>, TcpStream, super::DrainingStream<TcpStream>) {
    let tcp = tcp_listener().await;
    let addr = tcp.local_addr().unwrap();
    let mut listener = configure(DrainingListener::new(tcp, signal));
    let client = TcpStream::connect(addr).await.unwrap();
    let (conn, _) = within("accepting", listener.accept()).await.unwrap().expect("accepted");
    (listener, client, conn)
}

#[test]
fn drained_waits_for_an_http1_connection_to_close_until_the_keep_alive_grace() {
    runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let (mut listener, mut client, mut conn) =
            one_connection(signal, |l| l.request_head_timeout(NEVER).keep_alive_grace(NEVER)).await;
        let mut drained = listener.drained();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        within("reading the request", conn.read_exact(&mut request)).await.unwrap();
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        assert!(is_pending(&mut drained), "drained while a kept-alive HTTP/1 connection is open");
        drop(conn);
        within("drained once the connection closed", drained).await;
    });

    paused_runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let (mut listener, mut client, mut conn) = one_connection(signal, |l| {
            l.request_head_timeout(NEVER).keep_alive_grace(Duration::from_secs(5))
        })
        .await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        conn.read_exact(&mut request).await.unwrap();
        fire.send(()).unwrap();
        assert!(listener.accept().await.unwrap().is_none());
        let started = tokio::time::Instant::now();
        within("drained at the end of the grace", listener.drained()).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "drained at the end of the grace, the connection open"
        );
        drop(conn);
    });
}

#[test]
fn an_http2_connection_does_not_hold_drained_for_the_keep_alive_grace() {
    runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let (mut listener, mut client, mut conn) =
            one_connection(signal, |l| l.request_head_timeout(NEVER).keep_alive_grace(NEVER)).await;
        let request = [H2_PREFACE, &HTTP2_EMPTY_SETTINGS, &HTTP2_HEADERS_FRAME].concat();
        client.write_all(&request).await.unwrap();
        let mut read = vec![0u8; request.len()];
        within("reading the preface and a request", conn.read_exact(&mut read)).await.unwrap();
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        within("drained with the HTTP/2 connection open", listener.drained()).await;
        drop(conn);
    });
}

#[test]
fn a_request_head_that_stalls_during_a_drain_is_cut_at_the_request_head_timeout() {
    paused_runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let (mut listener, mut client, mut conn) =
            one_connection(signal, |l| l.request_head_timeout(Duration::from_secs(10))).await;
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);

        // Before any drain the stalled head is left alone, however long it waits.
        let waited = tokio::time::timeout(Duration::from_secs(3600), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "a read ended before any drain: {waited:?}");

        fire.send(()).unwrap();
        assert!(listener.accept().await.unwrap().is_none());
        let started = tokio::time::Instant::now();
        let error = within("the cut", conn.read(&mut buf)).await.expect_err("the stalled head is cut");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    });
}

#[test]
fn a_connection_between_requests_or_past_its_head_is_not_cut_by_the_request_head_timeout() {
    paused_runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let (mut listener, mut client, mut conn) = one_connection(signal, |l| {
            l.request_head_timeout(Duration::from_secs(1)).keep_alive_grace(NEVER)
        })
        .await;
        fire.send(()).unwrap();
        assert!(listener.accept().await.unwrap().is_none());
        let mut buf = [0u8; 64];
        // A whole head and part of a body: the body is the server's to time.
        client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\npart").await.unwrap();
        conn.read_exact(&mut buf[..42]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(3600), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "a read inside a body was cut: {waited:?}");
        // Answered; the next request has not started: the graceful shutdown's to close.
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(3600), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "a read between requests was cut: {waited:?}");
        drop(client);
    });
}

/// A kept-alive connection across the drain: the request after the signal is answered, with
/// `Connection: close`, and the connection closed after it; `drained` then resolves without
/// waiting for the grace.
#[cfg(feature = "axum")]
#[test]
fn with_connection_close_a_kept_connection_gets_its_next_request_answered_and_closed() {
    runtime().block_on(async {
        let tcp = tcp_listener().await;
        let addr = tcp.local_addr().unwrap();
        let (fire, signal) = drain_signal();
        let listener = DrainingListener::new(tcp, signal).keep_alive_grace(NEVER);
        let drained = listener.drained();
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .layer(listener.connection_close());
        let server = axum::serve(listener, app).with_graceful_shutdown(drained);
        let server = tokio::spawn(async move { server.await });

        let mut client = TcpStream::connect(addr).await.unwrap();
        let first = within("the first response", exchange(&mut client)).await;
        assert!(!first.to_ascii_lowercase().contains("connection: close"), "{first:?}");
        fire.send(()).unwrap();
        // The drain fired while the connection was idle; it is still served.
        let second = within("the response after the drain", exchange(&mut client)).await;
        assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
        assert!(second.to_ascii_lowercase().contains("connection: close"), "{second:?}");
        let mut rest = Vec::new();
        within("the server closing", client.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        within("the server to shut down", server).await.unwrap().unwrap();
    });
}

/// Sends `GET /` on a kept-alive connection and reads one response (head and a
/// `content-length` body).
#[cfg(feature = "axum")]
async fn exchange(client: &mut TcpStream) -> String {
    client.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "EOF inside a head: {response:?}");
        response.push(byte[0]);
    }
    let head = String::from_utf8(response).unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|n| n.trim().parse::<usize>().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).await.unwrap();
    head + std::str::from_utf8(&body).unwrap()
}

#[cfg(feature = "http")]
#[test]
fn connection_close_leaves_http2_responses_and_responses_before_the_drain_alone() {
    use std::convert::Infallible;

    use tower_layer::Layer;
    use tower_service::Service;

    /// Answers every request with an empty `200 OK`.
    #[derive(Clone)]
    struct Ok200;
    impl Service<http::Request<()>> for Ok200 {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<()>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(())))
        }
    }

    runtime().block_on(async {
        let (fire, signal) = drain_signal();
        let mut listener = DrainingListener::new(tcp_listener().await, signal);
        let mut service = listener.connection_close().layer(Ok200);
        let mut close_header = async |version| {
            let request = http::Request::builder().version(version).body(()).unwrap();
            let response = service.call(request).await.unwrap();
            response.headers().get(http::header::CONNECTION).map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(close_header(http::Version::HTTP_11).await, None, "before the drain");
        fire.send(()).unwrap();
        assert!(within("seeing the drain", listener.accept()).await.unwrap().is_none());
        assert_eq!(close_header(http::Version::HTTP_11).await.as_deref(), Some("close"));
        assert_eq!(close_header(http::Version::HTTP_10).await.as_deref(), Some("close"));
        assert_eq!(close_header(http::Version::HTTP_2).await, None, "HTTP/2 has no Connection header");
    });
}
