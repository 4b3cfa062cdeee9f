//! The descriptor store: every descriptor this process shares with its successor, by id.
//!
//! Values go in and come out as std types; the store keeps its own close-on-exec duplicate of
//! each, so what the application drops never invalidates the store and what the store drops
//! never closes the application's copy.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::descriptor::{Descriptor, Kind, Shareable};
use crate::error::{Error, Result};
use crate::protocol::WireEntry;
use crate::state::State;
use crate::sys::socket_table::{self, PathState};
use crate::sys::unix_socket::{inet_local_addr, unix_local_path};

/// One stored descriptor.
#[derive(Debug)]
pub(crate) struct StoreEntry {
    pub(crate) wire: WireEntry,
    /// Shared with a handoff in progress, which sends it without holding the store's lock.
    pub(crate) fd: Arc<OwnedFd>,
    inherited: bool,
    claimed: bool,
}

/// The store and the ownership state, behind one lock so that a handoff sees a consistent
/// snapshot and no mutation slips in while it runs.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) entries: BTreeMap<String, StoreEntry>,
}

pub(crate) type Shared = Arc<Mutex<Inner>>;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The descriptors this process shares with the next one, obtained from
/// [`Upgrader::fds`](crate::Upgrader::fds).
///
/// Each `listen_*`/`bind_*`/`connect_*`/`open_*` method returns the descriptor inherited under
/// `id` if there is a compatible one (this *claims* it), and otherwise creates one and stores
/// it. The `…_with` forms take a closure that creates the value, to set socket options first.
/// Inherited descriptors not claimed by the time [`Upgrader::ready`](crate::Upgrader::ready)
/// runs are closed and not passed on.
///
/// Every returned value is a fresh close-on-exec duplicate. File status flags such as
/// `O_NONBLOCK` belong to the open file description, which the duplicates, the store and the
/// other process all share: switching a listener to non-blocking mode switches it for them too.
/// The store never changes the mode.
#[derive(Debug, Clone)]
pub struct Fds {
    shared: Shared,
}

impl Fds {
    pub(crate) fn new(shared: Shared) -> Fds {
        Fds { shared }
    }

    pub(crate) fn insert_inherited(&self, received: Vec<(WireEntry, OwnedFd)>) {
        let mut inner = lock(&self.shared);
        for (wire, fd) in received {
            let id = wire.id.clone();
            inner.entries.insert(id, StoreEntry { wire, fd: Arc::new(fd), inherited: true, claimed: false });
        }
    }

    /// Closes inherited descriptors nobody claimed; returns their ids.
    pub(crate) fn close_unclaimed(&self) -> Vec<String> {
        let mut inner = lock(&self.shared);
        let unclaimed: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.inherited && !e.claimed)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &unclaimed {
            inner.entries.remove(id);
        }
        unclaimed
    }

    /// A TCP listener bound to `addr`: the inherited one if it is bound to that address (a
    /// requested port 0 accepts any port), else a new one.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `addr` does not resolve, or binding fails (the address is in use,
    ///   also by a stored listener under `id` bound to another address, which still holds the
    ///   port).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn listen_tcp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<TcpListener> {
        let wanted: Vec<SocketAddr> =
            addr.to_socket_addrs().map_err(|e| Error::Create { id: id.into(), source: e })?.collect();
        self.get_or_create(id, |fd| inet_fits(fd, &wanted), || TcpListener::bind(&wanted[..]))
    }

    /// The inherited TCP listener `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn listen_tcp_with(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<TcpListener>,
    ) -> Result<TcpListener> {
        self.get_or_create(id, |_| true, create)
    }

    /// A Unix stream listener at `path`: the inherited one if it is bound there, else a new
    /// one. A socket file left at `path` by a process that is gone is replaced; a live one is
    /// an error. The library never unlinks a listener's path, not even when it is closed.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if binding fails: a live socket, or a file that is not a socket, is at
    ///   `path`; the directory is missing or not writable; the path does not fit a socket address.
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn listen_unix(&self, id: &str, path: impl AsRef<Path>) -> Result<UnixListener> {
        let path = path.as_ref();
        self.get_or_create(id, |fd| unix_fits(fd, path), || bind_unix_replacing_stale(path))
    }

    /// The inherited Unix listener `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn listen_unix_with(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<UnixListener>,
    ) -> Result<UnixListener> {
        self.get_or_create(id, |_| true, create)
    }

    /// A UDP socket bound to `addr` (inherited if bound there; port 0 accepts any).
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `addr` does not resolve, or binding fails.
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn bind_udp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        let wanted: Vec<SocketAddr> =
            addr.to_socket_addrs().map_err(|e| Error::Create { id: id.into(), source: e })?.collect();
        self.get_or_create(id, |fd| inet_fits(fd, &wanted), || UdpSocket::bind(&wanted[..]))
    }

    /// The inherited UDP socket `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn bind_udp_with(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<UdpSocket>,
    ) -> Result<UdpSocket> {
        self.get_or_create(id, |_| true, create)
    }

    /// The inherited TCP connection `id`, or a new one to `addr`.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if connecting to `addr` fails (only tried when no TCP stream is stored
    ///   under `id`).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn connect_tcp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<TcpStream> {
        self.get_or_create(id, |_| true, || TcpStream::connect(addr))
    }

    /// The inherited TCP connection `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn tcp_stream_with(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<TcpStream>,
    ) -> Result<TcpStream> {
        self.get_or_create(id, |_| true, create)
    }

    /// The inherited Unix stream connection `id`, or a new one to `path`.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if connecting to `path` fails (only tried when no Unix stream is stored
    ///   under `id`).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn connect_unix(&self, id: &str, path: impl AsRef<Path>) -> Result<UnixStream> {
        self.get_or_create(id, |_| true, || UnixStream::connect(path))
    }

    /// The inherited Unix stream connection `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn unix_stream_with(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<UnixStream>,
    ) -> Result<UnixStream> {
        self.get_or_create(id, |_| true, create)
    }

    /// The inherited file `id`, or `path` opened with `options`.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if opening `path` with `options` fails (only tried when no file is
    ///   stored under `id`).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn open_file(&self, id: &str, path: impl AsRef<Path>, options: &OpenOptions) -> Result<File> {
        self.get_or_create(id, |_| true, || options.open(path))
    }

    /// The inherited file `id`, or the one `create` makes.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source).
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn file_with(&self, id: &str, create: impl FnOnce() -> io::Result<File>) -> Result<File> {
        self.get_or_create(id, |_| true, create)
    }

    /// The inherited descriptor `id` of any kind, or the one `create` makes (stored with kind
    /// [`Kind::Fd`]). For descriptors the typed methods do not cover: an eventfd, a memfd, a
    /// pipe, a `SOCK_SEQPACKET` listener.
    ///
    /// # Errors
    ///
    /// - [`Error::Create`] if `create` fails (its error is the source); never when anything is
    ///   stored under `id`, whatever its kind.
    /// - [`Error::UpgradeInProgress`], [`Error::UpgradeCompleted`] or [`Error::Stopped`] if a new
    ///   one is needed while the store may not change (a handoff is running, a newcomer took over,
    ///   or the upgrader is stopped); a stored one that fits is still returned then.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn fd_with(&self, id: &str, create: impl FnOnce() -> io::Result<OwnedFd>) -> Result<OwnedFd> {
        self.get_or_create(id, |_| true, create)
    }

    /// The stored TCP listener `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn tcp_listener(&self, id: &str) -> Result<Option<TcpListener>> {
        self.get(id)
    }

    /// The stored Unix listener `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn unix_listener(&self, id: &str) -> Result<Option<UnixListener>> {
        self.get(id)
    }

    /// The stored UDP socket `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn udp_socket(&self, id: &str) -> Result<Option<UdpSocket>> {
        self.get(id)
    }

    /// The stored TCP connection `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn tcp_stream(&self, id: &str) -> Result<Option<TcpStream>> {
        self.get(id)
    }

    /// The stored Unix stream connection `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn unix_stream(&self, id: &str) -> Result<Option<UnixStream>> {
        self.get(id)
    }

    /// The stored file `id`, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::KindMismatch`] if `id` holds a descriptor of another kind.
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors).
    pub fn file(&self, id: &str) -> Result<Option<File>> {
        self.get(id)
    }

    /// The stored descriptor `id` of any kind, if any.
    ///
    /// # Errors
    ///
    /// - [`Error::Io`] if duplicating the stored descriptor fails (the process is out of
    ///   descriptors). Any kind is handed out, so there is no kind mismatch.
    pub fn fd(&self, id: &str) -> Result<Option<OwnedFd>> {
        self.get(id)
    }

    /// Removes `id` from the store and closes the store's copy. Copies handed out stay open;
    /// a Unix listener's path is not unlinked.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownId`] if nothing is stored under `id`.
    /// - [`Error::UpgradeInProgress`] while a handoff is running.
    /// - [`Error::Stopped`] once the upgrader is stopped. (After a newcomer took over, removing is
    ///   allowed: that is how a draining process lets go of what it no longer needs.)
    pub fn remove(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.shared);
        inner.state.check_remove()?;
        match inner.entries.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownId(id.into())),
        }
    }

    /// Every stored descriptor, sorted by id.
    pub fn list(&self) -> Vec<Descriptor> {
        lock(&self.shared)
            .entries
            .iter()
            .map(|(id, e)| Descriptor {
                id: id.clone(),
                kind: Kind::of(&e.wire),
                addr: e.wire.addr.clone(),
                inherited: e.inherited,
            })
            .collect()
    }

    fn get<T: Shareable>(&self, id: &str) -> Result<Option<T>> {
        let mut inner = lock(&self.shared);
        let Some(entry) = inner.entries.get_mut(id) else { return Ok(None) };
        let kind = Kind::of(&entry.wire);
        if !T::accepts(&kind) {
            return Err(Error::KindMismatch { id: id.into(), expected: T::KIND, found: kind });
        }
        entry.claimed = true;
        duplicate(id, &entry.fd).map(Some)
    }

    fn get_or_create<T: Shareable>(
        &self,
        id: &str,
        fits: impl FnOnce(&OwnedFd) -> bool,
        create: impl FnOnce() -> io::Result<T>,
    ) -> Result<T> {
        let mut inner = lock(&self.shared);
        if let Some(entry) = inner.entries.get_mut(id) {
            let kind = Kind::of(&entry.wire);
            if T::accepts(&kind) && fits(&entry.fd) {
                entry.claimed = true;
                return duplicate(id, &entry.fd);
            }
            tracing::info!(id, stored = %kind, addr = %entry.wire.addr, "stored descriptor does not match the request; creating a new one");
        }
        inner.state.check_add()?;
        let value = create().map_err(|source| Error::Create { id: id.into(), source })?;
        let fd = value
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating a descriptor for the store", e))?;
        let wire = value.describe(id);
        inner
            .entries
            .insert(id.into(), StoreEntry { wire, fd: Arc::new(fd), inherited: false, claimed: true });
        Ok(value)
    }
}

fn duplicate<T: From<OwnedFd>>(id: &str, fd: &OwnedFd) -> Result<T> {
    // `try_clone` is fcntl(F_DUPFD_CLOEXEC): the copy is close-on-exec from its first moment.
    fd.try_clone().map(T::from).map_err(|e| Error::io_at("duplicating a stored descriptor", id, e))
}

/// Whether the socket behind `fd` is bound to one of `wanted`. Port 0 asks for any port; an
/// unspecified address matches either family's unspecified address (a Go listener on `:8080`
/// is bound to `[::]:8080`, dual-stack).
fn inet_fits(fd: &OwnedFd, wanted: &[SocketAddr]) -> bool {
    let Some(actual) = inet_local_addr(fd) else { return false };
    wanted.iter().any(|w| {
        let ip_fits = w.ip() == actual.ip() || (w.ip().is_unspecified() && actual.ip().is_unspecified());
        ip_fits && (w.port() == 0 || w.port() == actual.port())
    })
}

fn unix_fits(fd: &OwnedFd, wanted: &Path) -> bool {
    let Some(actual) = unix_local_path(fd) else { return false };
    let actual = actual.as_path();
    actual == wanted || (std::path::absolute(actual).ok() == std::path::absolute(wanted).ok())
}

/// Binds a Unix listener at `path`, replacing a socket file whose process is gone.
fn bind_unix_replacing_stale(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && socket_table::state(path)? == PathState::Stale => {
            tracing::debug!(path = %path.display(), "replacing a Unix socket left by a process that is gone");
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}
