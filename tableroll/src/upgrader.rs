//! The public face: [`Upgrader`] and its [`Builder`]. The sessions themselves live in
//! `handoff`, the serving thread in `server`; this file holds the lifecycle's resources and
//! hands them from one step to the next.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::coordination::{Directory, UpgradeSocket};
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::fds::{self, Fds, Inner};
use crate::handoff::newcomer::Newcomer;
use crate::handoff::wire_entries;
use crate::id;
use crate::journal::{ms, Journal};
use crate::peer_policy::PeerPolicy;
use crate::probation::{Rollback, RollbackHook, Rollbacks};
use crate::server::{ServerConfig, UpgradeServer};
use crate::signal::UpgradeComplete;
use crate::state::State;
use crate::sys::wake;
use crate::systemd::Reporter;
use serde_json::json;

/// Settings for an [`Upgrader`]; see [`Upgrader::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    dir: std::path::PathBuf,
    id: Option<String>,
    upgrade_timeout: Duration,
    connect_timeout: Option<Duration>,
    peer_policy: PeerPolicy,
    systemd_notify: bool,
    create_dir: bool,
    probation: Duration,
    on_rollback: Option<RollbackHook>,
    generation: Option<u64>,
}

impl Builder {
    /// This process's id in the group (default: the pid and 64 random bits, shortened to fit a
    /// long directory path). It names the upgrade socket `<dir>/<id>.sock`, so it must be a
    /// valid file name, unique among the live processes of the group, and short enough for the
    /// socket path to fit 107 bytes.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Uses this process's pid as its id, as Go tableroll v1.x processes do.
    ///
    /// Go tableroll before v2 names every process by its pid: its owner file holds a pid and
    /// its sockets are `<pid>.sock`, and it fails with `unable to parse pid` when the owner file
    /// holds anything else. A process that shares a group with such processes must use its pid
    /// as id. Pids repeat across PID namespaces, so all members must then share one.
    pub fn pid_as_id(self) -> Self {
        self.id(std::process::id().to_string())
    }

    /// How long this process, as owner, waits for a newcomer to receive everything and finish
    /// its ready handshake before giving up on it and remaining the owner. Default 60 s.
    ///
    /// It bounds the time between a newcomer's connection and its `ready()`. It does not bound
    /// the moment after the handshake: the owner steps down only once the owner file names the
    /// newcomer, and stays the owner, serving, for as long as the newcomer holds the lock
    /// without recording itself (a newcomer paused there, say).
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

    /// Whether [`build`](Self::build) creates the coordination directory, and any missing
    /// parent, when it does not exist (mode 0700: only this user may reach the group). Default:
    /// off, and a missing directory is an error, since a misspelt path would otherwise start a
    /// second, separate group. Under systemd, `RuntimeDirectory=` creates it instead.
    pub fn create_dir(mut self, create: bool) -> Self {
        self.create_dir = create;
        self
    }

    /// How long this process stays a live backup after a newcomer took over from it. Default
    /// zero: no probation.
    ///
    /// During its probation the process is no longer the owner (the owner file names the
    /// newcomer), but it keeps its listeners, its store and its upgrade socket, and
    /// [`upgrade_complete`](Upgrader::upgrade_complete) has not fired: the application serves
    /// on as before. If the new owner dies (or stops serving) while the owner file still names
    /// it, this process takes the lock, records itself as the owner again and goes on as the
    /// owner: a *rollback*, told through [`on_rollback`](Self::on_rollback),
    /// [`Upgrader::rollbacks`] and a `tracing` record. A newcomer of ours that finds the new
    /// owner dead meanwhile receives the descriptors from this process. The probation ends, and
    /// `upgrade_complete` fires, when the window passes with the new owner alive, or when the
    /// owner file names yet another process (the new owner was upgraded in turn). Meanwhile
    /// the store cannot change: adding or removing returns
    /// [`ErrorKind::UpgradeInProgress`](crate::ErrorKind::UpgradeInProgress).
    ///
    /// The new owner's exit is seen within moments through its pidfd; without one (its process
    /// is in another PID namespace) within 50 ms, and a new owner that stops serving but stays
    /// alive within 250 ms. The requests it had accepted
    /// and not answered are lost; the connections waiting in the listeners' backlogs are not.
    /// Go processes know nothing of probation: a Go newcomer that finds the new owner dead
    /// before this process recorded itself again binds afresh, and fails while this process
    /// holds the listening sockets.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # fn main() -> tableroll::Result<()> {
    /// let upgrader = tableroll::Upgrader::builder("/run/myapp/tableroll")
    ///     .probation(Duration::from_secs(30))
    ///     .on_rollback(|rollback| {
    ///         eprintln!("{} died after taking over; serving again", rollback.failed_owner());
    ///     })
    ///     .build()?;
    /// let listener = upgrader.fds().listen_tcp("web", "127.0.0.1:8080")?;
    /// upgrader.ready()?;
    /// // Fires only once a newer process took over and survived its probation.
    /// upgrader.upgrade_complete().wait();
    /// # drop(listener);
    /// # Ok(())
    /// # }
    /// ```
    pub fn probation(mut self, window: Duration) -> Self {
        self.probation = window;
        self
    }

    /// Called on the upgrade thread at each rollback (see [`probation`](Self::probation)),
    /// after this process was recorded as the owner again. Keep it short: upgrades wait while
    /// it runs.
    pub fn on_rollback(mut self, hook: impl Fn(&Rollback) + Send + Sync + 'static) -> Self {
        self.on_rollback = Some(RollbackHook::new(hook));
        self
    }

    /// This process's generation, recorded with each of its events in the group's journal
    /// (see [`inspect::read_journal`](crate::inspect::read_journal)). Default: none. `tableroll
    /// run` sets 1 for the first instance of a group and one more for each after.
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = Some(generation);
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
    /// [`Upgrader::ready`] or until the upgrader is stopped or dropped.
    ///
    /// # Errors
    ///
    /// The directory is missing or not writable; the id is invalid, too long or in use by a
    /// live process; the lock or the descriptors did not come within the connect timeout; the
    /// owner file holds an invalid id; the owner broke the protocol; the process is out of
    /// descriptors; with [`create_dir`](Self::create_dir), the directory could not be created.
    /// On error nothing is left behind (but a directory `create_dir` made): the upgrade socket
    /// is removed and the lock released.
    pub fn build(self) -> Result<Upgrader> {
        // First, while failing leaves nothing behind: the signal's eventfd can run out.
        let signal = UpgradeComplete::new()?;
        if self.create_dir {
            create_owner_only(&self.dir)?;
        }
        let dir = Directory::open(&self.dir)?;
        let id = match self.id {
            Some(id) => id,
            None => id::default_id(dir.max_id_len()),
        };
        let socket = UpgradeSocket::bind(&dir.socket_path(id.as_bytes())?, &id)?;
        let (stop_rx, stop_tx) =
            wake::pipe().map_err(|e| Error::io("creating the upgrader's stop pipe", e))?;
        let joining_started = Instant::now();
        let deadline = self.connect_timeout.and_then(|t| joining_started.checked_add(t));
        let (newcomer, received) = Newcomer::join(&dir, &id, deadline, &self.peer_policy)?;
        let journal = Journal::new(&dir, &id, self.generation);
        journal.record(
            "joined",
            json!({ "from": newcomer.from().map(id::text), "descriptors": received.len(),
                    "join_ms": ms(joining_started.elapsed()) }),
        );
        let shared = Arc::new(Mutex::new(Inner { state: State::Inheriting, entries: BTreeMap::new() }));
        let fds = Fds::new(Arc::clone(&shared));
        let mut inherited_ids: Vec<String> = received.iter().map(|(w, _)| w.id.clone()).collect();
        inherited_ids.sort();
        fds.insert_inherited(received.into_iter().map(|(wire, fd)| wire_entries::from_wire(wire, fd)));
        fault::hit(Point::NewcomerAfterReceive);
        tracing::debug!(id, inherited = inherited_ids.len(), "joined the upgrade group");
        Ok(Upgrader {
            id,
            dir,
            fds,
            shared,
            signal,
            inherited_ids,
            upgrade_timeout: self.upgrade_timeout,
            connect_timeout: self.connect_timeout,
            peer_policy: self.peer_policy,
            reporter: Reporter::from_env(self.systemd_notify),
            probation: self.probation,
            rollbacks: Rollbacks::new(self.on_rollback),
            journal,
            joining: Mutex::new(Some(Joining { socket, newcomer })),
            server: Mutex::new(None),
            stop_rx,
            stop_tx: Mutex::new(Some(stop_tx)),
        })
    }
}

/// Creates `dir` and its missing parents, each mode 0700; an existing directory is left as it is.
fn create_owner_only(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io_at("creating the coordination directory", dir, e))
}

/// What a process holds from joining to ready: its upgrade socket, the lock, and the session
/// with the owner.
struct Joining {
    socket: UpgradeSocket,
    newcomer: Newcomer,
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
    fds: Fds,
    shared: fds::Shared,
    signal: UpgradeComplete,
    inherited_ids: Vec<String>,
    upgrade_timeout: Duration,
    connect_timeout: Option<Duration>,
    peer_policy: PeerPolicy,
    /// Where readiness and draining are reported (systemd), if anywhere.
    reporter: Reporter,
    probation: Duration,
    rollbacks: Arc<Rollbacks>,
    /// This process's voice in the group's journal.
    journal: Arc<Journal>,
    /// Until ready (or stop). Its mutex is held for the whole of `ready()`.
    joining: Mutex<Option<Joining>>,
    /// From ready to stop.
    server: Mutex<Option<UpgradeServer>>,
    /// The stop pipe: closing the write end wakes a `ready()` waiting for the owner and the
    /// serving thread.
    stop_rx: OwnedFd,
    stop_tx: Mutex<Option<OwnedFd>>,
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

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
            create_dir: false,
            probation: Duration::ZERO,
            on_rollback: None,
            generation: None,
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

    /// How many times this process became the owner again because the owner that took over
    /// from it died during its probation (see [`Builder::probation`]).
    pub fn rollbacks(&self) -> u64 {
        self.rollbacks.count()
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
    /// passed on. If there was an owner, the ready handshake tells it to step down. This
    /// process's id is then written to the owner file: that is the commit point, after which
    /// nothing can fail; the previous owner steps down when it sees the file name this process
    /// (it is told through its own [`upgrade_complete`](Self::upgrade_complete)), the lock is
    /// released, and this process serves upgrade requests. If the previous owner died after
    /// handing over its descriptors, this process becomes the owner all the same: it holds
    /// every descriptor.
    ///
    /// Calling it again once owner does nothing. [`stop`](Self::stop) from another thread
    /// interrupts a `ready()` that waits for the owner.
    ///
    /// # Errors
    ///
    /// The owner is alive but refused the handshake (its upgrade timeout passed, say), or the
    /// handshake broke; the owner file could not be written (the file system is full, say); the
    /// serving thread could not be started. This process then does not become the owner: it
    /// releases the lock and is stopped, and should exit; the previous owner goes on serving.
    /// [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if the upgrader was stopped (also meanwhile) or a previous ready
    /// failed.
    pub fn ready(&self) -> Result<()> {
        let mut joining = locked(&self.joining);
        let Some(Joining { socket, newcomer }) = joining.take() else {
            return match fds::lock(&self.shared).state {
                State::Stopped => Err(Error::stopped()),
                _ => Ok(()),
            };
        };
        let ready_started = Instant::now();
        let previous = newcomer.from().map(id::text);
        let closed = self.fds.close_unclaimed();
        if !closed.is_empty() {
            tracing::info!(ids = ?closed, "closed inherited descriptors that were not claimed before ready");
        }
        let result = self.spawn_server(socket).and_then(|server| {
            let deadline = self.connect_timeout.and_then(|t| Instant::now().checked_add(t));
            newcomer.take_over(&self.id, deadline, self.stop_rx.as_fd()).map(|lock| (server, lock))
        });
        let (mut server, lock) = match result {
            Ok(committed) => committed,
            Err(e) => {
                // Not the owner: the lock and the session are gone, and so is the upgrade
                // socket with the serving thread that never served.
                fds::lock(&self.shared).state.stop();
                self.journal.record_error("ready_failed", &e, json!({}));
                self.signal.fire();
                return Err(e);
            }
        };
        // Committed: the owner file names this process. Nothing below can fail.
        // Only dead processes' sockets go; the previous owner's is live until it stepped down.
        self.dir.remove_stale_sockets(&[self.id.as_bytes()]);
        if let Err(e) = fds::lock(&self.shared).state.become_owner() {
            tracing::warn!(error = %e, "stopped while becoming the owner");
        }
        server.start();
        drop(lock);
        *locked(&self.server) = Some(server);
        tracing::info!(id = self.id, "this process is now the owner");
        self.journal
            .record("committed", json!({ "previous": previous, "ready_ms": ms(ready_started.elapsed()) }));
        self.reporter.ready(&self.id);
        Ok(())
    }

    /// The serving thread, waiting to be told this process is the owner.
    fn spawn_server(&self, socket: UpgradeSocket) -> Result<UpgradeServer> {
        let stop =
            self.stop_rx.try_clone().map_err(|e| Error::io("duplicating the upgrader's stop pipe", e))?;
        UpgradeServer::spawn(ServerConfig {
            socket,
            dir: self.dir.clone(),
            id: self.id.clone(),
            shared: Arc::clone(&self.shared),
            signal: self.signal.clone(),
            upgrade_timeout: self.upgrade_timeout,
            peer_policy: self.peer_policy.clone(),
            reporter: self.reporter.clone(),
            probation: self.probation,
            rollbacks: Arc::clone(&self.rollbacks),
            journal: Arc::clone(&self.journal),
            stop,
        })
    }

    /// Stops serving upgrades, closes the store's own copies of its descriptors, removes this
    /// process's upgrade socket (if the path is still this process's socket) and standby mark,
    /// and fires [`upgrade_complete`](Self::upgrade_complete). A handoff in progress is
    /// abandoned (the newcomer sees this process gone), and a `ready()` waiting for the owner
    /// returns [`ErrorKind::Stopped`](crate::ErrorKind::Stopped). Descriptors handed out stay
    /// open; the store is empty from then on and can no longer change. If called before
    /// `ready`, the lock is released without becoming owner.
    ///
    /// The copies close first: a newcomer that no longer finds this process among the
    /// standbys must not find it holding a listening socket either, or binding afresh would
    /// fail with "Address already in use".
    pub fn stop(&self) {
        let (copies, was_stopped) = {
            let mut inner = fds::lock(&self.shared);
            let was_stopped = inner.state == State::Stopped;
            inner.state.stop();
            (std::mem::take(&mut inner.entries), was_stopped)
        };
        drop(copies);
        // Wakes whatever waits: a ready() in its handshake, the serving thread.
        drop(locked(&self.stop_tx).take());
        drop(locked(&self.joining).take());
        let server = locked(&self.server).take();
        drop(server);
        if !was_stopped {
            self.journal.record("stopped", json!({}));
        }
        self.signal.fire();
    }
}

impl Drop for Upgrader {
    fn drop(&mut self) {
        self.stop();
    }
}
