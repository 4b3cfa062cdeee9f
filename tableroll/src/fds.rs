//! The descriptor store: every descriptor this process shares with its successor, by id.
//!
//! Values go in and come out as std types; the store keeps its own close-on-exec duplicate of
//! each, so what the application drops never invalidates the store and what the store drops
//! never closes the application's copy. Entries are typed ([`Kind`] and [`Address`]); how they
//! look on the wire is the session layer's business.
//!
//! The lock is held only to look, claim and insert, never while a descriptor is created: a
//! slow connect does not hold up a handoff, and a closure may use the store itself.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::descriptor::{accepts, Address, Descriptor, Kind, Shareable};
use crate::error::{Error, Result};
use crate::state::State;
use crate::sys::socket_table::{self, PathState};
use crate::sys::unix_socket::{inet_local_addr, unix_local_path};

/// One stored descriptor.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) address: Address,
    /// Shared with a handoff in progress, which sends it without holding the store's lock.
    pub(crate) fd: Arc<OwnedFd>,
    inherited: bool,
    claimed: bool,
}

impl Entry {
    /// An entry received from the previous owner, not claimed yet.
    pub(crate) fn inherited(kind: Kind, address: Address, fd: OwnedFd) -> Entry {
        Entry { kind, address, fd: Arc::new(fd), inherited: true, claimed: false }
    }
}

/// The store and the ownership state, behind one lock so that a handoff sees a consistent
/// snapshot and no mutation slips in while it runs.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) entries: BTreeMap<String, Entry>,
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
/// it. [`get_or_insert_with`](Fds::get_or_insert_with) does the same for any [`Shareable`]
/// type with a closure that creates the value (to set socket options first, or to store a
/// descriptor of no listed kind as an [`OwnedFd`]); [`get`](Fds::get) only looks. Inherited
/// descriptors not claimed by the time [`Upgrader::ready`](crate::Upgrader::ready) runs are
/// closed and not passed on.
///
/// ```no_run
/// use std::net::TcpListener;
///
/// # fn main() -> tableroll::Result<()> {
/// let upgrader = tableroll::Upgrader::new("/run/myapp/tableroll")?;
/// let fds = upgrader.fds();
/// let web = fds.listen_tcp("web", "127.0.0.1:8080")?;
/// let admin = fds.get_or_insert_with("admin", || {
///     let listener = TcpListener::bind("127.0.0.1:8081")?;
///     listener.set_nonblocking(true)?;
///     Ok(listener)
/// })?;
/// let same: Option<TcpListener> = fds.get("admin")?;
/// # Ok(())
/// # }
/// ```
///
/// Every returned value is a fresh close-on-exec duplicate. File status flags such as
/// `O_NONBLOCK` belong to the open file description, which the duplicates, the store and the
/// other process all share: switching a listener to non-blocking mode switches it for them too.
/// The store never changes the mode.
///
/// A descriptor is created without the store's lock held, so a slow `bind` or `connect`, or a
/// closure that itself uses the store, holds up nobody. If two threads ask for the same id at
/// once and both create one, the first to finish is stored and returned to both; the other's
/// is closed, so every caller holds the descriptor that goes to the next process.
///
/// # What can fail
///
/// The methods that may create a descriptor fail with:
///
/// - [`ErrorKind::Create`](crate::ErrorKind::Create) if creating it fails (the address does not resolve, binding, connecting
///   or opening fails, or the closure's error, which is the source). It is tried only when
///   nothing fitting is stored under the id.
/// - [`ErrorKind::UpgradeInProgress`](crate::ErrorKind::UpgradeInProgress), [`ErrorKind::UpgradeCompleted`](crate::ErrorKind::UpgradeCompleted) or [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if a new
///   one is needed while the store may not change (a handoff is running, a newcomer took over,
///   or the upgrader is stopped); a stored one that fits is still returned then. A descriptor
///   created while a handoff began is closed and not stored.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) if duplicating a descriptor fails (the process is out of descriptors).
///
/// [`get`](Fds::get) fails only with [`ErrorKind::KindMismatch`](crate::ErrorKind::KindMismatch) and [`ErrorKind::Io`](crate::ErrorKind::Io).
#[derive(Debug, Clone)]
pub struct Fds {
    shared: Shared,
}

impl Fds {
    pub(crate) fn new(shared: Shared) -> Fds {
        Fds { shared }
    }

    /// Stores what the previous owner handed over, each entry unclaimed.
    pub(crate) fn insert_inherited(&self, received: impl IntoIterator<Item = (String, Entry)>) {
        lock(&self.shared).entries.extend(received);
    }

    /// Closes inherited descriptors nobody claimed; returns their ids.
    pub(crate) fn close_unclaimed(&self) -> Vec<String> {
        let mut closed = Vec::new();
        lock(&self.shared).entries.retain(|id, e| {
            let keep = !e.inherited || e.claimed;
            if !keep {
                closed.push(id.clone());
            }
            keep
        });
        closed
    }

    /// A TCP listener bound to `addr`: the inherited one if it is bound to that address (a
    /// requested port 0 accepts any port), else a new one.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail). A stored listener under `id` bound to another
    /// address still holds its port: binding the same port again fails.
    pub fn listen_tcp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<TcpListener> {
        let wanted = resolve(id, addr)?;
        self.obtain(id, |fd| inet_fits(fd, &wanted), || TcpListener::bind(&wanted[..]))
    }

    /// A Unix stream listener at `path`: the inherited one if it is bound there, else a new
    /// one. A socket file left at `path` by a process that is gone is replaced; a live one is
    /// an error. The library never unlinks a listener's path, not even when it is closed.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail). Binding fails if a live socket, or a file that
    /// is not a socket, is at `path`, if the directory is missing or not writable, or if the
    /// path does not fit a socket address.
    pub fn listen_unix(&self, id: &str, path: impl AsRef<Path>) -> Result<UnixListener> {
        let path = path.as_ref();
        self.obtain(id, |fd| unix_fits(fd, path), || bind_unix_replacing_stale(path))
    }

    /// A UDP socket bound to `addr`: the inherited one if it is bound there (a requested port 0
    /// accepts any port), else a new one.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail).
    pub fn bind_udp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        let wanted = resolve(id, addr)?;
        self.obtain(id, |fd| inet_fits(fd, &wanted), || UdpSocket::bind(&wanted[..]))
    }

    /// The inherited TCP connection `id`, or a new one to `addr`.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail).
    pub fn connect_tcp(&self, id: &str, addr: impl ToSocketAddrs) -> Result<TcpStream> {
        self.obtain(id, |_| true, || TcpStream::connect(addr))
    }

    /// The inherited Unix stream connection `id`, or a new one to `path`.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail).
    pub fn connect_unix(&self, id: &str, path: impl AsRef<Path>) -> Result<UnixStream> {
        self.obtain(id, |_| true, || UnixStream::connect(path))
    }

    /// The inherited file `id`, or `path` opened with `options`.
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail).
    pub fn open_file(&self, id: &str, path: impl AsRef<Path>, options: &OpenOptions) -> Result<File> {
        self.obtain(id, |_| true, || options.open(path))
    }

    /// The descriptor stored under `id` as a `T`, or the one `create` makes, stored with `T`'s
    /// kind (see [`Shareable`]). As an [`OwnedFd`], a stored descriptor of any kind is returned,
    /// and a new one is stored as [`Kind::Fd`]: for what the typed methods do not cover, such
    /// as an eventfd, a memfd, a pipe or a `SOCK_SEQPACKET` listener.
    ///
    /// `create` runs without the store's lock held, and may use the store.
    ///
    /// ```no_run
    /// use std::net::TcpStream;
    /// use std::os::fd::OwnedFd;
    ///
    /// # fn main() -> tableroll::Result<()> {
    /// # let upgrader = tableroll::Upgrader::new("/run/myapp/tableroll")?;
    /// let backend = upgrader.fds().get_or_insert_with("backend", || {
    ///     let stream = TcpStream::connect("10.0.0.2:5432")?;
    ///     stream.set_nodelay(true)?;
    ///     Ok(stream)
    /// })?;
    /// let scratch = upgrader.fds().get_or_insert_with::<OwnedFd>("scratch", || {
    ///     Ok(std::fs::File::options().read(true).write(true).open("/dev/shm/myapp")?.into())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [*What can fail*](Fds#what-can-fail). A stored descriptor of another kind is
    /// replaced rather than an error.
    pub fn get_or_insert_with<T: Shareable>(
        &self,
        id: &str,
        create: impl FnOnce() -> io::Result<T>,
    ) -> Result<T> {
        self.obtain(id, |_| true, create)
    }

    /// The descriptor stored under `id` as a `T`, if any; this claims an inherited one. Any
    /// stored kind can be had as an [`OwnedFd`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::KindMismatch`](crate::ErrorKind::KindMismatch) if `id` holds a descriptor of another kind than `T`'s;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) as in [*What can fail*](Fds#what-can-fail).
    pub fn get<T: Shareable>(&self, id: &str) -> Result<Option<T>> {
        let mut inner = lock(&self.shared);
        let Some(entry) = inner.entries.get_mut(id) else { return Ok(None) };
        if !accepts::<T>(&entry.kind) {
            return Err(Error::kind_mismatch(id, &T::KIND, &entry.kind));
        }
        entry.claimed = true;
        duplicate(id, &entry.fd).map(Some)
    }

    /// Removes `id` from the store and closes the store's copy. Copies handed out stay open;
    /// a Unix listener's path is not unlinked.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::UnknownId`](crate::ErrorKind::UnknownId) if nothing is stored under `id`.
    /// - [`ErrorKind::UpgradeInProgress`](crate::ErrorKind::UpgradeInProgress) while a handoff is running.
    /// - [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) once the upgrader is stopped. (After a newcomer took over, removing is
    ///   allowed: that is how a draining process lets go of what it no longer needs.)
    pub fn remove(&self, id: &str) -> Result<()> {
        let mut inner = lock(&self.shared);
        inner.state.check_remove()?;
        match inner.entries.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::unknown_id(id)),
        }
    }

    /// Every stored descriptor, sorted by id.
    pub fn list(&self) -> Vec<Descriptor> {
        lock(&self.shared)
            .entries
            .iter()
            .map(|(id, e)| Descriptor {
                id: id.clone(),
                kind: e.kind.clone(),
                addr: e.address.addr.clone(),
                inherited: e.inherited,
            })
            .collect()
    }

    /// The stored `id` if it is a `T` that `fits`, else the one `create` makes, stored. The lock
    /// is taken to look and claim, released while `create` runs, and taken again to insert.
    fn obtain<T: Shareable>(
        &self,
        id: &str,
        fits: impl Fn(&OwnedFd) -> bool,
        create: impl FnOnce() -> io::Result<T>,
    ) -> Result<T> {
        if let Some(stored) = self.claim(id, &fits)? {
            return Ok(stored);
        }
        let value = create().map_err(|source| Error::create(id, source))?;
        let fd = value
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating a descriptor for the store", e))?;
        let address = value.address();
        let mut inner = lock(&self.shared);
        // A handoff may have begun meanwhile: `value` is closed, the snapshot stays whole.
        inner.state.check_add()?;
        if let Some(entry) = inner.entries.get_mut(id).filter(|e| accepts::<T>(&e.kind) && fits(&e.fd)) {
            // Another thread stored one meanwhile: the first stored wins, and `value` is closed.
            entry.claimed = true;
            return duplicate(id, &entry.fd);
        }
        let entry = Entry { kind: T::KIND, address, fd: Arc::new(fd), inherited: false, claimed: true };
        inner.entries.insert(id.into(), entry);
        Ok(value)
    }

    /// Under the lock: the stored `id`, claimed, if it is a `T` that `fits`; `None` if a new one
    /// may be created.
    fn claim<T: Shareable>(&self, id: &str, fits: impl Fn(&OwnedFd) -> bool) -> Result<Option<T>> {
        let mut inner = lock(&self.shared);
        if let Some(entry) = inner.entries.get_mut(id) {
            if accepts::<T>(&entry.kind) && fits(&entry.fd) {
                entry.claimed = true;
                return duplicate(id, &entry.fd).map(Some);
            }
            tracing::info!(id, stored = %entry.kind, addr = %entry.address.addr, "stored descriptor does not match the request; creating a new one");
        }
        inner.state.check_add()?;
        Ok(None)
    }
}

fn resolve(id: &str, addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>> {
    Ok(addr.to_socket_addrs().map_err(|e| Error::create(id, e))?.collect())
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
