//! Tokio listeners and sockets from the descriptor store (the `tokio` feature).
//!
//! Each method is the std get-or-create method of [`Fds`] followed by the two steps tokio
//! needs: the socket is switched to non-blocking mode and registered with the runtime of the
//! calling thread. Nothing here is needed to use tokio with the library; it saves the
//! boilerplate and puts the warning about the shared mode where it is read.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fds::Fds;

/// # Non-blocking mode is shared
///
/// The methods below turn `O_NONBLOCK` on, because tokio requires it. That flag belongs to
/// the open file description, which the store, every copy handed out, and the previous and
/// next owners all share: setting it here sets it for them too. A previous owner still doing
/// a blocking `accept` on its copy of the same listener then gets
/// [`WouldBlock`](io::ErrorKind::WouldBlock) instead of waiting. So run every generation's
/// copy in non-blocking mode (a tokio server, or a std server that polls as the crate example
/// does), or at least never rely on the blocking mode of a descriptor shared with another
/// process.
impl Fds {
    /// [`Fds::listen_tcp`] as a tokio listener: the inherited listener `id` if it is bound to
    /// `addr` (port 0 accepts any port), else a new one, in non-blocking mode and registered
    /// with the current tokio runtime.
    ///
    /// Call it from within a runtime (inside `#[tokio::main]` or a task, or after
    /// `Runtime::enter`). It sets `O_NONBLOCK` on the listener, which the other process shares:
    /// an old process doing a blocking `accept` on its copy then gets `WouldBlock` (see
    /// [*Non-blocking mode is shared*](#non-blocking-mode-is-shared)).
    ///
    /// With axum or hyper-util, wrap it in a [`DrainingListener`](crate::DrainingListener)
    /// with [`upgrade_complete`](crate::Upgrader::upgrade_complete) as its drain signal, and
    /// start the server's graceful shutdown with its
    /// [`drained`](crate::DrainingListener::drained) future: the shutdown then does not reset
    /// the connections accepted just before the upgrade completed.
    ///
    /// # Errors
    ///
    /// No tokio runtime is running on this thread ([`ErrorKind::Io`](crate::ErrorKind::Io), checked before the store is
    /// touched); binding fails or the store may not change now (as for [`Fds::listen_tcp`]);
    /// setting `O_NONBLOCK` or registering with the runtime fails ([`ErrorKind::Io`](crate::ErrorKind::Io)).
    ///
    /// # Panics
    ///
    /// If the runtime was built without I/O enabled (tokio's `from_std` panics then).
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn listen_tcp_tokio(&self, id: &str, addr: impl ToSocketAddrs) -> Result<tokio::net::TcpListener> {
        require_runtime(id)?;
        let listener = self.listen_tcp(id, addr)?;
        set_nonblocking(id, listener.set_nonblocking(true))?;
        register(id, tokio::net::TcpListener::from_std(listener))
    }

    /// [`Fds::listen_unix`] as a tokio listener: the inherited listener `id` if it is bound at
    /// `path`, else a new one, in non-blocking mode and registered with the current tokio
    /// runtime. As with the std method, the path is never unlinked by the library.
    ///
    /// Call it from within a runtime. It sets `O_NONBLOCK` on the listener, which the other
    /// process shares (see [*Non-blocking mode is shared*](#non-blocking-mode-is-shared)).
    ///
    /// # Errors
    ///
    /// No tokio runtime is running on this thread ([`ErrorKind::Io`](crate::ErrorKind::Io), checked before the store is
    /// touched); binding fails or the store may not change now (as for [`Fds::listen_unix`]);
    /// setting `O_NONBLOCK` or registering with the runtime fails ([`ErrorKind::Io`](crate::ErrorKind::Io)).
    ///
    /// # Panics
    ///
    /// If the runtime was built without I/O enabled.
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn listen_unix_tokio(&self, id: &str, path: impl AsRef<Path>) -> Result<tokio::net::UnixListener> {
        require_runtime(id)?;
        let listener = self.listen_unix(id, path)?;
        set_nonblocking(id, listener.set_nonblocking(true))?;
        register(id, tokio::net::UnixListener::from_std(listener))
    }

    /// [`Fds::bind_udp`] as a tokio socket: the inherited socket `id` if it is bound to `addr`
    /// (port 0 accepts any port), else a new one, in non-blocking mode and registered with the
    /// current tokio runtime.
    ///
    /// Call it from within a runtime. It sets `O_NONBLOCK` on the socket, which the other
    /// process shares (see [*Non-blocking mode is shared*](#non-blocking-mode-is-shared)).
    /// Both processes receive from the same socket while both hold it; each datagram goes to
    /// one of them.
    ///
    /// # Errors
    ///
    /// No tokio runtime is running on this thread ([`ErrorKind::Io`](crate::ErrorKind::Io), checked before the store is
    /// touched); binding fails or the store may not change now (as for [`Fds::bind_udp`]);
    /// setting `O_NONBLOCK` or registering with the runtime fails ([`ErrorKind::Io`](crate::ErrorKind::Io)).
    ///
    /// # Panics
    ///
    /// If the runtime was built without I/O enabled.
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn bind_udp_tokio(&self, id: &str, addr: impl ToSocketAddrs) -> Result<tokio::net::UdpSocket> {
        require_runtime(id)?;
        let socket = self.bind_udp(id, addr)?;
        set_nonblocking(id, socket.set_nonblocking(true))?;
        register(id, tokio::net::UdpSocket::from_std(socket))
    }
}

/// Fails unless a tokio runtime is running on this thread: tokio's `from_std` would panic, and
/// the store must not be changed for a value that cannot be returned.
fn require_runtime(id: &str) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::io_at(
            "no tokio runtime on this thread to register descriptor",
            id,
            io::Error::other(e),
        )),
    }
}

fn set_nonblocking(id: &str, result: io::Result<()>) -> Result<()> {
    result.map_err(|e| Error::io_at("setting O_NONBLOCK on descriptor", id, e))
}

fn register<T>(id: &str, result: io::Result<T>) -> Result<T> {
    result.map_err(|e| Error::io_at("registering with tokio the descriptor", id, e))
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::Upgrader;

    /// Bounds every wait, to turn a hang into a failure.
    const TIMEOUT: Duration = Duration::from_secs(20);

    fn upgrader(dir: &tempfile::TempDir, id: &str) -> Upgrader {
        Upgrader::builder(dir.path()).id(id).connect_timeout(TIMEOUT).build().expect("building an upgrader")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
    }

    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(TIMEOUT, future).await.unwrap_or_else(|_| panic!("timed out {what}"))
    }

    #[test]
    fn tokio_tcp_listener_from_the_store_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let upgrader = upgrader(&dir, "one");
        runtime().block_on(async {
            let listener = upgrader.fds().listen_tcp_tokio("web", "127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // The store holds the same socket: the std accessor reaches it.
            let stored =
                upgrader.fds().get::<std::net::TcpListener>("web").unwrap().expect("stored under its id");
            assert_eq!(stored.local_addr().unwrap(), addr);

            let client = tokio::spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                conn.write_all(b"ping").await.unwrap();
                let mut answer = Vec::new();
                conn.read_to_end(&mut answer).await.unwrap();
                answer
            });
            let (mut conn, _) = within("accepting", listener.accept()).await.unwrap();
            let mut request = [0u8; 4];
            within("reading", conn.read_exact(&mut request)).await.unwrap();
            assert_eq!(&request, b"ping");
            conn.write_all(b"pong").await.unwrap();
            drop(conn);
            assert_eq!(within("the client", client).await.unwrap(), b"pong");
        });
    }

    #[test]
    fn tokio_unix_listener_and_udp_socket_from_the_store_work() {
        let dir = tempfile::tempdir().unwrap();
        let upgrader = upgrader(&dir, "one");
        let path = dir.path().join("app.sock");
        runtime().block_on(async {
            let listener = upgrader.fds().listen_unix_tokio("unix", &path).unwrap();
            let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
            let (mut conn, _) = within("accepting", listener.accept()).await.unwrap();
            client.write_all(b"u").await.unwrap();
            let mut byte = [0u8];
            within("reading", conn.read_exact(&mut byte)).await.unwrap();
            assert_eq!(&byte, b"u");

            let socket = upgrader.fds().bind_udp_tokio("udp", "127.0.0.1:0").unwrap();
            let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sender.send_to(b"datagram", socket.local_addr().unwrap()).await.unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = within("receiving", socket.recv_from(&mut buf)).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"datagram"[..], sender.local_addr().unwrap()));
        });
        let ids: Vec<String> = upgrader.fds().list().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, ["udp", "unix"]);
    }

    #[test]
    fn outside_a_runtime_is_an_error_and_leaves_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let upgrader = upgrader(&dir, "one");
        let err = upgrader.fds().listen_tcp_tokio("web", "127.0.0.1:0").unwrap_err();
        assert!(matches!(err.kind(), crate::ErrorKind::Io), "{err:?}");
        assert!(err.to_string().contains("no tokio runtime"), "{err}");
        assert!(upgrader.fds().list().is_empty(), "nothing stored: {:?}", upgrader.fds().list());
    }

    /// `UpgradeComplete` is what axum's graceful shutdown takes: `Future<Output = ()>`, `Send`
    /// and `'static`. Firing it through `stop` ends the server once its requests are done.
    #[test]
    fn upgrade_complete_ends_an_axum_server_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let upgrader = upgrader(&dir, "one");
        runtime().block_on(async {
            let listener = upgrader.fds().listen_tcp_tokio("web", "127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }));
            let shutdown = upgrader.upgrade_complete();
            let server =
                tokio::spawn(
                    async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await },
                );
            assert_eq!(within("a request", get(addr)).await, "hello\n");
            assert!(!server.is_finished());

            upgrader.stop();
            within("the server to shut down", server).await.unwrap().unwrap();
        });
    }

    /// The pitfall documented on the impl: the mode set for tokio in one process is the mode
    /// of the other process's copy too.
    #[test]
    fn nonblocking_mode_is_shared_with_the_previous_owner() {
        let dir = tempfile::tempdir().unwrap();
        let old = upgrader(&dir, "old");
        let old_copy = old.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
        old.ready().unwrap();
        let new = upgrader(&dir, "new");
        let rt = runtime();
        let _inherited = rt.block_on(async { new.fds().listen_tcp_tokio("web", "127.0.0.1:0").unwrap() });
        // The old process never asked for non-blocking mode, and has it.
        let flags = rustix::fs::fcntl_getfl(&old_copy).unwrap();
        assert!(flags.contains(rustix::fs::OFlags::NONBLOCK), "{flags:?}");
        // So its accept does not wait for a connection.
        let err = old_copy.accept().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
    }

    /// `GET /` with `Connection: close`; the body.
    async fn get(addr: std::net::SocketAddr) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head: {raw:?}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{raw:?}");
        body.to_string()
    }
}
