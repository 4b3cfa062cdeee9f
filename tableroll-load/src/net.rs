//! TCP or Unix, behind one type each for listeners, connections and addresses.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address, `HOST:PORT` (resolved at each connect; an IP address needs no lookup).
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "http://{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl Listener {
    /// Makes `accept` return `WouldBlock` instead of waiting. The mode belongs to the socket,
    /// which every generation shares: each generation sets it, none relies on the default.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    /// Accepts a connection, blocking for its handler (the accepted socket inherits nothing
    /// from the listener's mode on Linux, but say so anyway).
    pub fn accept(&self) -> io::Result<Conn> {
        let conn = match self {
            Listener::Tcp(l) => Conn::Tcp(l.accept()?.0),
            Listener::Unix(l) => Conn::Unix(l.accept()?.0),
        };
        conn.set_nonblocking(false)?;
        Ok(conn)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// A connection of either kind.
#[derive(Debug)]
pub enum Conn {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream.
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `target`, waiting at most `timeout` (a Unix connect does not wait), and
    /// sets `timeout` on every read and write.
    ///
    /// # Errors
    ///
    /// The address does not resolve, or `connect(2)` or a socket option failed.
    pub fn connect(target: &Target, timeout: Duration) -> io::Result<Conn> {
        let conn = match target {
            Target::Tcp(addr) => {
                let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?} resolves to no address"))
                })?;
                let conn = TcpStream::connect_timeout(&addr, timeout)?;
                conn.set_nodelay(true)?;
                Conn::Tcp(conn)
            }
            Target::Unix(path) => Conn::Unix(UnixStream::connect(path)?),
        };
        conn.set_timeouts(Some(timeout))?;
        Ok(conn)
    }

    /// Sets the read and write timeouts.
    pub fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(c) => c.set_read_timeout(timeout).and_then(|()| c.set_write_timeout(timeout)),
            Conn::Unix(c) => c.set_read_timeout(timeout).and_then(|()| c.set_write_timeout(timeout)),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Tcp(c) => c.set_nonblocking(on),
            Conn::Unix(c) => c.set_nonblocking(on),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.read(buf),
            Conn::Unix(c) => c.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.write(buf),
            Conn::Unix(c) => c.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(c) => c.as_fd(),
            Conn::Unix(c) => c.as_fd(),
        }
    }
}
