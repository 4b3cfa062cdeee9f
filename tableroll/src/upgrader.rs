//! The public face: [`Upgrader`] and its [`Builder`].

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::Pid;

use crate::coordination::{bind_upgrade_socket, connect_to_owner, Directory, OwnerLock, OwnerWatch, GRACE};
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::fds::{self, Fds, Inner};
use crate::handoff::take;
use crate::id;
use crate::peer_cred::peer_cred;
use crate::protocol::{Channel, WireEntry};
use crate::server::{ServerConfig, UpgradeServer};
use crate::signal::UpgradeComplete;
use crate::state::State;
use crate::systemd::Reporter;

/// Which processes may connect to this process's upgrade socket and receive its descriptors,
/// checked with `SO_PEERCRED` on every connection before anything is sent (and, on the
/// newcomer's side, applied to the owner it connects to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerPolicy {
    /// Processes of this process's effective user, and root. The default.
    #[default]
    SameUserOrRoot,
    /// Any user that can reach the socket (it is created mode 0600, so the file system still
    /// restricts who can).
    AnyUser,
    /// Only these user ids.
    Uids(Vec<u32>),
}

impl PeerPolicy {
    fn allows(&self, uid: u32) -> bool {
        match self {
            PeerPolicy::SameUserOrRoot => uid == 0 || uid == rustix::process::geteuid().as_raw(),
            PeerPolicy::AnyUser => true,
            PeerPolicy::Uids(uids) => uids.contains(&uid),
        }
    }

    /// Whether the process at the other end of `stream` may take part; `reading` names the
    /// credentials read for an error (the owner's, or a newcomer's).
    pub(crate) fn check(&self, stream: &UnixStream, reading: &'static str) -> Result<()> {
        let cred = peer_cred(stream).map_err(|e| Error::io(reading, e))?;
        if self.allows(cred.uid) {
            Ok(())
        } else {
            Err(Error::PeerRefused { pid: cred.pid.map_or(0, Pid::as_raw_pid), uid: cred.uid })
        }
    }
}

/// Settings for an [`Upgrader`]; see [`Upgrader::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    dir: PathBuf,
    id: Option<String>,
    upgrade_timeout: Duration,
    connect_timeout: Option<Duration>,
    peer_policy: PeerPolicy,
    systemd_notify: bool,
}

impl Builder {
    /// This process's id in the group (default: the pid and 64 random bits, shortened to fit a
    /// long directory path). It names the
    /// upgrade socket `<dir>/<id>.sock`, so it must be a valid file name, unique among the live
    /// processes of the group, and short enough for the socket path to fit 107 bytes.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How long this process, as owner, waits for a newcomer to receive everything and finish
    /// its ready handshake before giving up on it and remaining the owner. Default 60 s.
    ///
    /// It bounds the time between a newcomer's construction and its `ready()`.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// A bound on each wait for the current owner as a newcomer: taking the coordination lock
    /// and receiving the descriptors (in [`build`](Self::build)), and the ready handshake (in
    /// [`Upgrader::ready`]). Default: unbounded, as in the Go original.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Who may connect to the upgrade socket. Default [`PeerPolicy::SameUserOrRoot`].
    pub fn peer_policy(mut self, policy: PeerPolicy) -> Self {
        self.peer_policy = policy;
        self
    }

    /// Whether to report readiness (`READY=1`, `MAINPID`) and draining (`STOPPING=1`) to
    /// systemd when `$NOTIFY_SOCKET` is set; see the [`systemd`](crate::systemd) module.
    /// Default: on.
    #[cfg(feature = "systemd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "systemd")))]
    pub fn systemd_notify(mut self, enabled: bool) -> Self {
        self.systemd_notify = enabled;
        self
    }

    /// Joins the group: binds this process's upgrade socket, takes the coordination lock
    /// (waiting while another newcomer holds it), and, if there is a live owner, receives
    /// all its descriptors into [`Upgrader::fds`]. The lock is held until
    /// [`Upgrader::ready`] or until the upgrader is dropped.
    ///
    /// # Errors
    ///
    /// The directory is missing or not writable; the id is invalid, too long or in use by a
    /// live process; the lock or the descriptors did not come within the connect timeout; the
    /// owner file holds an invalid id; the owner broke the protocol. On error nothing is left
    /// behind: the upgrade socket is removed and the lock released.
    pub fn build(self) -> Result<Upgrader> {
        // First, while failing leaves nothing behind: the signal's eventfd can run out.
        let signal = UpgradeComplete::new()?;
        let dir = Directory::open(&self.dir)?;
        let id = match self.id {
            Some(id) => id,
            None => id::default_id(dir.max_id_len()),
        };
        let socket_path = dir.socket_path(id.as_bytes())?;
        let listener = bind_upgrade_socket(&socket_path, &id)?;
        let guard = SocketGuard(Some(socket_path.clone()));
        let deadline = self.connect_timeout.and_then(|t| Instant::now().checked_add(t));
        let lock = OwnerLock::acquire(&dir.owner_file(), deadline)?;
        fault::hit(Point::NewcomerAfterLock);
        let owner = lock.read_owner()?;
        let (session, received) = match owner {
            Some(owner) if owner == id.as_bytes() => {
                tracing::debug!(id, "the owner file names this id: a previous process with it is gone");
                (None, Vec::new())
            }
            Some(owner) => inherit(&dir, owner, deadline, &self.peer_policy)?,
            None => (None, Vec::new()),
        };
        let shared = Arc::new(Mutex::new(Inner { state: State::Inheriting, entries: BTreeMap::new() }));
        let fds = Fds::new(Arc::clone(&shared));
        let mut inherited_ids: Vec<String> = received.iter().map(|(w, _)| w.id.clone()).collect();
        inherited_ids.sort();
        fds.insert_inherited(received);
        fault::hit(Point::NewcomerAfterReceive);
        let guard = guard.disarm();
        tracing::debug!(id, inherited = inherited_ids.len(), "joined the upgrade group");
        Ok(Upgrader {
            id,
            dir,
            socket_path: guard,
            fds,
            shared,
            signal,
            inherited_ids,
            upgrade_timeout: self.upgrade_timeout,
            connect_timeout: self.connect_timeout,
            peer_policy: self.peer_policy,
            reporter: Reporter::from_env(self.systemd_notify),
            phase: Mutex::new(Phase::Joining(Box::new(Joining { listener, lock, session }))),
        })
    }
}

/// Removes the upgrade socket if construction fails after binding it.
struct SocketGuard(Option<PathBuf>);

impl SocketGuard {
    fn disarm(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The connection to the owner kept open from construction to ready.
struct Session {
    stream: UnixStream,
    owner_version: u32,
    owner: OwnerWatch,
}

/// The open session with the owner (if any) and what it sent.
type Inheritance = (Option<Session>, Vec<(WireEntry, OwnedFd)>);

/// Connects to the owner named in the owner file and receives its descriptors. An owner that
/// is gone (its socket missing or refusing) means there is no owner; one that dies while
/// handing over leaves this process with what it received so far, and no owner.
fn inherit(
    dir: &Directory,
    owner: Vec<u8>,
    deadline: Option<Instant>,
    policy: &PeerPolicy,
) -> Result<Inheritance> {
    let owner_socket = dir
        .socket_path(&owner)
        .map_err(|e| Error::protocol(format!("the owner file names an id that cannot be used: {e}")))?;
    let Some(stream) = connect_to_owner(&owner_socket, deadline)? else {
        tracing::info!(owner = %String::from_utf8_lossy(&owner), "the previous owner is gone; starting with fresh descriptors");
        return Ok((None, Vec::new()));
    };
    policy.check(&stream, "reading the peer credentials of the owner")?;
    let owner = OwnerWatch::new(owner_socket, &stream);
    let ch = Channel::new(stream, deadline, None, "receiving descriptors from the owner")?;
    let mut received = Vec::new();
    match take::receive(&ch, &mut received) {
        Ok(owner_version) => Ok((Some(Session { stream: ch.into_stream(), owner_version, owner }), received)),
        // A broken connection (not a timeout: a slow owner is alive) from an owner that is
        // gone: keep the live descriptors it managed to send.
        Err(e @ (Error::Protocol(_) | Error::Io { .. })) if owner.is_gone(GRACE) => {
            tracing::warn!(error = %e, kept = received.len(), "the owner died while handing over; keeping what it sent");
            Ok((None, received))
        }
        Err(e) => Err(e),
    }
}

struct Joining {
    listener: UnixListener,
    lock: OwnerLock,
    session: Option<Session>,
}

enum Phase {
    /// Constructed: holding the lock and maybe a session with the owner.
    Joining(Box<Joining>),
    /// The owner, serving upgrade requests.
    Serving(UpgradeServer),
    /// Stopped, or ready failed.
    Done,
}

/// A member of an upgrade group: the process that owns the shared descriptors, or the
/// newcomer taking them over.
///
/// The lifecycle of a server process:
///
/// 1. [`Upgrader::new`] (or [`Upgrader::builder`]) joins the group and inherits the current
///    owner's descriptors.
/// 2. The application gets its listeners from [`Upgrader::fds`] (inherited, or created on the
///    first start) and starts serving on them.
/// 3. [`Upgrader::ready`] makes this process the owner; the previous owner is told to drain.
/// 4. When a newer process takes over, [`Upgrader::upgrade_complete`] fires: stop accepting,
///    finish the requests in flight, exit.
///
/// Dropping the upgrader stops it (see [`Upgrader::stop`]).
pub struct Upgrader {
    id: String,
    dir: Directory,
    socket_path: PathBuf,
    fds: Fds,
    shared: fds::Shared,
    signal: UpgradeComplete,
    inherited_ids: Vec<String>,
    upgrade_timeout: Duration,
    connect_timeout: Option<Duration>,
    peer_policy: PeerPolicy,
    /// Where readiness and draining are reported (systemd), if anywhere.
    reporter: Reporter,
    phase: Mutex<Phase>,
}

impl std::fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrader")
            .field("id", &self.id)
            .field("dir", &self.dir.path())
            .field("state", &fds::lock(&self.shared).state)
            .finish_non_exhaustive()
    }
}

impl Upgrader {
    /// Joins the group coordinated in `dir` with the default settings; see [`Builder::build`].
    ///
    /// # Errors
    ///
    /// As for [`Builder::build`].
    pub fn new(dir: impl AsRef<Path>) -> Result<Upgrader> {
        Upgrader::builder(dir).build()
    }

    /// Settings for joining the group coordinated in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> Builder {
        Builder {
            dir: dir.as_ref().to_owned(),
            id: None,
            upgrade_timeout: Duration::from_secs(60),
            connect_timeout: None,
            peer_policy: PeerPolicy::default(),
            systemd_notify: cfg!(feature = "systemd"),
        }
    }

    /// This process's id in the group.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The descriptor store.
    pub fn fds(&self) -> &Fds {
        &self.fds
    }

    /// The ids received from the previous owner, sorted; empty for the first process of a
    /// group or after the previous owner crashed.
    pub fn inherited_ids(&self) -> &[String] {
        &self.inherited_ids
    }

    /// The signal that fires when a newcomer took over (or this upgrader was stopped).
    pub fn upgrade_complete(&self) -> UpgradeComplete {
        self.signal.clone()
    }

    /// Declares this process ready to serve: makes it the owner of the group.
    ///
    /// Inherited descriptors the application did not claim are closed first and will not be
    /// passed on. If there was an owner, the ready handshake tells it to step down (it is then
    /// told through its own [`upgrade_complete`](Self::upgrade_complete)). This process's id
    /// is written to the owner file, the lock is released, and this process starts serving
    /// upgrade requests. If the previous owner died after handing over its descriptors, this
    /// process becomes the owner all the same: it holds every descriptor.
    ///
    /// Calling it again once owner does nothing.
    ///
    /// # Errors
    ///
    /// The owner is alive but refused the handshake (its upgrade timeout passed, say), or the
    /// handshake broke. This process then does not become the owner, releases the lock and
    /// is stopped: it should exit, leaving the old owner serving. [`Error::Stopped`] if the
    /// upgrader was stopped or a previous ready failed.
    pub fn ready(&self) -> Result<()> {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let joining = match std::mem::replace(&mut *phase, Phase::Done) {
            Phase::Joining(joining) => joining,
            Phase::Serving(server) => {
                *phase = Phase::Serving(server);
                return Ok(());
            }
            Phase::Done => return Err(Error::Stopped),
        };
        let Joining { listener, lock, session } = *joining;
        let closed = self.fds.close_unclaimed();
        if !closed.is_empty() {
            tracing::info!(ids = ?closed, "closed inherited descriptors that were not claimed before ready");
        }
        let mut previous_owner = None;
        let mut open_session = None;
        if let Some(session) = session {
            previous_owner = session.owner.socket().file_stem().map(|s| s.to_owned());
            match self.handshake(session) {
                Ok(stream) => open_session = stream,
                Err(e) => {
                    fds::lock(&self.shared).state.stop();
                    self.signal.fire();
                    drop(listener);
                    let _ = std::fs::remove_file(&self.socket_path);
                    return Err(e);
                }
            }
        }
        fault::hit(Point::NewcomerBeforeOwnerFile);
        lock.write_owner(self.id.as_bytes())?;
        // The old owner waits for this close to confirm its step-down: only now is this process
        // recorded as the owner (protocol step 8: write, then close).
        drop(open_session);
        let keep: Vec<&[u8]> =
            [Some(self.id.as_bytes()), previous_owner.as_deref().map(|s| s.as_encoded_bytes())]
                .into_iter()
                .flatten()
                .collect();
        self.dir.remove_stale_sockets(&keep);
        fds::lock(&self.shared).state.become_owner()?;
        let server = UpgradeServer::spawn(ServerConfig {
            listener,
            socket_path: self.socket_path.clone(),
            shared: Arc::clone(&self.shared),
            signal: self.signal.clone(),
            upgrade_timeout: self.upgrade_timeout,
            peer_policy: self.peer_policy.clone(),
            id: self.id.clone(),
            owner_file: self.dir.owner_file(),
            reporter: self.reporter.clone(),
        })?;
        drop(lock);
        *phase = Phase::Serving(server);
        tracing::info!(id = self.id, "this process is now the owner");
        self.reporter.ready(&self.id);
        Ok(())
    }

    /// Runs the handshake; a failure is forgiven if the owner turns out to be dead. Returns the
    /// session to keep open until the owner file names this process.
    fn handshake(&self, session: Session) -> Result<Option<UnixStream>> {
        let deadline = self.connect_timeout.and_then(|t| Instant::now().checked_add(t));
        let result = Channel::new(session.stream, deadline, None, "waiting for the owner to step down")
            .and_then(|ch| take::ready(&ch, session.owner_version).map(|()| ch.into_stream()));
        let e = match result {
            Ok(stream) => return Ok(Some(stream)),
            Err(e) => e,
        };
        if session.owner.is_gone(GRACE) {
            tracing::warn!(error = %e, "the previous owner is gone; taking over with the descriptors it sent");
            Ok(None)
        } else {
            Err(Error::OwnerRefused(e.to_string()))
        }
    }

    /// Stops serving upgrades, removes this process's upgrade socket and fires
    /// [`upgrade_complete`](Self::upgrade_complete). A handoff in progress is abandoned (the
    /// newcomer sees this process gone). Descriptors handed out stay open; the store can no
    /// longer change. If called before `ready`, the lock is released without becoming owner.
    pub fn stop(&self) {
        fds::lock(&self.shared).state.stop();
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *phase, Phase::Done) {
            Phase::Serving(mut server) => server.stop(),
            Phase::Joining(joining) => drop(joining),
            Phase::Done => {}
        }
        drop(phase);
        match std::fs::remove_file(&self.socket_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.socket_path.display(), error = %e, "could not remove the upgrade socket")
            }
            _ => {}
        }
        self.signal.fire();
    }
}

impl Drop for Upgrader {
    fn drop(&mut self) {
        self.stop();
    }
}
