//! The tokio listeners a [`DrainingListener`] can wrap: the sealed [`TokioListener`] trait.
//!
//! [`DrainingListener`]: super::DrainingListener

use std::fmt;
use std::io;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio::net::TcpListener {}
    impl Sealed for tokio::net::UnixListener {}
}

/// A tokio listener that a [`DrainingListener`] can wrap: [`tokio::net::TcpListener`] or
/// [`tokio::net::UnixListener`].
///
/// The trait is sealed: it names what the two have in common and is implemented for nothing
/// else.
///
/// [`DrainingListener`]: super::DrainingListener
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub trait TokioListener: sealed::Sealed + Send + Unpin + 'static {
    /// An accepted connection: [`tokio::net::TcpStream`] or [`tokio::net::UnixStream`].
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A socket address: [`std::net::SocketAddr`] or [`tokio::net::unix::SocketAddr`].
    type Addr: fmt::Debug + Send + 'static;

    /// Polls for a new connection: the listener's own `poll_accept`.
    ///
    /// # Errors
    ///
    /// Those of [`accept(2)`](https://man7.org/linux/man-pages/man2/accept.2.html), some of
    /// which concern one connection only (`ECONNABORTED`) and some the process (`EMFILE`).
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>>;

    /// The address the listener is bound to: the listener's own `local_addr`.
    ///
    /// # Errors
    ///
    /// Those of [`getsockname(2)`](https://man7.org/linux/man-pages/man2/getsockname.2.html).
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// Sets `TCP_NODELAY` on an accepted connection (a TCP one; a Unix one has nothing to set).
    ///
    /// # Errors
    ///
    /// Those of [`setsockopt(2)`](https://man7.org/linux/man-pages/man2/setsockopt.2.html).
    fn set_nodelay(stream: &Self::Stream, nodelay: bool) -> io::Result<()>;
}

impl TokioListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::TcpListener::local_addr(self)
    }

    fn set_nodelay(stream: &Self::Stream, nodelay: bool) -> io::Result<()> {
        stream.set_nodelay(nodelay)
    }
}

impl TokioListener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, Self::Addr)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::UnixListener::local_addr(self)
    }

    fn set_nodelay(_: &Self::Stream, _: bool) -> io::Result<()> {
        Ok(())
    }
}
