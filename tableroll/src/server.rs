//! The owner's upgrade server: one background thread that accepts newcomers on this process's
//! upgrade socket, runs one session at a time, and watches the owner file.
//!
//! Why a thread: a newcomer may arrive at any moment, and the application should not have to
//! poll for it or run an async runtime. The thread owns the upgrade socket and sleeps in
//! `poll(2)` on it, on the stop pipe and on the owner file's watch. It is spawned before the
//! process becomes the owner (spawning can fail, and nothing may fail once the owner file names
//! this process), and serves only once told it is the owner; it is woken and joined on stop.
//! A second newcomer waits in the listen backlog while a session runs; it is not dropped.
//!
//! For as long as it serves, the thread steps down whenever the owner file names another live
//! process (see [`crate::handoff::owner`]), not only at the end of a session.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::coordination::{accept_one, Directory, OwnerFile, OwnerFileWatch, StandbyMark, UpgradeSocket};
use crate::error::{Error, ErrorKind, Result};
use crate::fds::{self, Shared};
use crate::handoff::owner::{Committed, Group, Outcome, OwnerSession, FALLBACK_IDLE};
use crate::handoff::standby::{self, Probation, StandbyEvent};
use crate::handoff::wire_entries;
use crate::id;
use crate::journal::{ms, Journal};
use crate::peer_policy::PeerPolicy;
use crate::probation::{Rollback, Rollbacks};
use crate::signal::UpgradeComplete;
use crate::state::State;
use crate::sys::peer_cred::peer_cred;
use crate::sys::poll::{self, Interest};
use crate::systemd::Reporter;
use serde_json::json;

/// The first pause after an accept error; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the serving thread needs.
pub(crate) struct ServerConfig {
    pub(crate) socket: UpgradeSocket,
    pub(crate) dir: Directory,
    pub(crate) id: String,
    pub(crate) shared: Shared,
    pub(crate) signal: UpgradeComplete,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) peer_policy: PeerPolicy,
    pub(crate) reporter: Reporter,
    /// How long a stepped-down process stays a backup (zero: none).
    pub(crate) probation: Duration,
    pub(crate) rollbacks: Arc<Rollbacks>,
    pub(crate) journal: Arc<Journal>,
    /// The read end of the upgrader's stop pipe: readable (end of file) once stopped.
    pub(crate) stop: OwnedFd,
}

/// The serving thread, from spawn to join.
pub(crate) struct UpgradeServer {
    /// Dropped without sending: the thread ends without serving.
    start: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UpgradeServer {
    /// Spawns the thread, which waits for [`UpgradeServer::start`] before it serves.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the owner file cannot be opened, the socket cannot be made
    /// non-blocking, or the thread cannot be spawned.
    pub(crate) fn spawn(config: ServerConfig) -> Result<UpgradeServer> {
        let listener = config.socket.listener();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io_at("setting the upgrade socket non-blocking", config.socket.path(), e))?;
        let owner_file = OwnerFile::open(&config.dir.owner_file())?;
        let watch = config.dir.watch_owner_file();
        let (start, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tableroll-upgrades".into())
            .spawn(move || {
                if started.recv().is_ok() {
                    serve(&config, &owner_file, &watch);
                }
            })
            .map_err(|e| Error::io("spawning the upgrade server thread", e))?;
        Ok(UpgradeServer { start: Some(start), thread: Some(thread) })
    }

    /// This process is the owner: serve. Cannot fail.
    pub(crate) fn start(&mut self) {
        if let Some(start) = &self.start {
            // Fails only if the thread is gone, which it is only after a panic.
            let _ = start.send(());
        }
    }

    /// Waits for the thread to end. The caller closed the stop pipe first, or never started
    /// the server.
    pub(crate) fn join(&mut self) {
        drop(self.start.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UpgradeServer {
    fn drop(&mut self) {
        self.join();
    }
}

/// What the idle server was woken by.
enum Idle {
    Stopped,
    Newcomer(UnixStream),
    /// The owner file may name someone else.
    FileChanged,
}

/// What the serving thread is to the group.
enum Role {
    /// The owner file names this process.
    Owner,
    /// Stepped down, still holding everything: serves a newcomer that finds the owner gone,
    /// and while on probation watches the owner that took over (see `handoff::standby`).
    Standby(Option<Probation>),
}

/// The serving thread's state between two events.
struct Serving<'a> {
    config: &'a ServerConfig,
    group: Group<'a>,
    role: Role,
    /// Made when a handoff starts; kept while a standby; removed when this process stays the
    /// owner, and when the thread ends.
    mark: Option<StandbyMark>,
    /// Connections accepted while a session waited for its commit point, served first.
    held: VecDeque<UnixStream>,
    backoff: Duration,
}

fn serve(config: &ServerConfig, owner_file: &OwnerFile, watch: &OwnerFileWatch) {
    let group = Group {
        dir: &config.dir,
        owner_file,
        watch,
        id: config.id.as_bytes(),
        upgrade_socket: config.socket.listener(),
        stop: config.stop.as_fd(),
    };
    let mut serving = Serving {
        config,
        group,
        role: Role::Owner,
        mark: None,
        held: VecDeque::new(),
        backoff: ACCEPT_BACKOFF_MIN,
    };
    loop {
        let go_on = match serving.role {
            Role::Owner => serving.as_owner(),
            Role::Standby(_) => serving.as_standby(),
        };
        if !go_on {
            return;
        }
    }
}

impl Serving<'_> {
    /// Serves the next event as the owner; `false` once stopped.
    fn as_owner(&mut self) -> bool {
        let event = match self.held.pop_front() {
            Some(stream) => Ok(Idle::Newcomer(stream)),
            None => next_event(&self.group),
        };
        match event {
            Ok(Idle::Stopped) => false,
            Ok(Idle::FileChanged) => {
                // Events about other files (a newcomer binding its socket, say) need no look.
                if self.group.watch.take_changes() {
                    if let Some(new_owner) = self.group.new_owner() {
                        self.step_down(new_owner, None);
                    }
                }
                true
            }
            Ok(Idle::Newcomer(stream)) => {
                self.backoff = ACCEPT_BACKOFF_MIN;
                let Ok(committed) =
                    session(self.config, &self.group, stream, SessionAs::Owner, &mut self.mark)
                else {
                    return false;
                };
                self.held.extend(committed.held);
                match committed.outcome {
                    Outcome::SteppedDown { new_owner } => self.step_down(new_owner, committed.newcomer),
                    // It took over and died before this process saw it step in: a rollback
                    // all the same, the application never having been told anything.
                    Outcome::StillOwner { failed_owner: Some(failed) } => {
                        self.record_rollback(&Rollback::new(id::text(&failed), Duration::ZERO));
                    }
                    Outcome::StillOwner { failed_owner: None } | Outcome::LetGo => {}
                }
                true
            }
            Err(e) => self.pause_after(&e),
        }
    }

    /// After an accept error: waits out the back-off; `false` if stopped meanwhile.
    fn pause_after(&mut self, e: &dyn std::fmt::Display) -> bool {
        if !pause_after_accept_error(&self.group, e, self.backoff) {
            return false;
        }
        self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
        true
    }

    /// The owner file names another live process, `new_owner`: drain, or first stand by on
    /// probation, watching the new owner (`newcomer`, its process when known).
    fn step_down(&mut self, new_owner: Vec<u8>, newcomer: Option<OwnedFd>) {
        StandbyMark::ensure(&mut self.mark, &self.config.dir, self.group.id);
        if self.config.probation.is_zero() {
            tracing::info!("the owner file names a new live owner; stepping down");
            self.drain(Some(&new_owner), false);
            return;
        }
        fds::lock(&self.config.shared).state.begin_probation();
        let probation = Probation::new(new_owner, newcomer, self.config.probation);
        self.config.journal.record(
            "on_probation",
            json!({ "new_owner": probation.owner(), "window_ms": ms(self.config.probation) }),
        );
        tracing::info!(
            new_owner = probation.owner(),
            probation_ms = self.config.probation.as_millis(),
            "the owner file names a new live owner; standing by on probation"
        );
        self.role = Role::Standby(Some(probation));
    }

    /// Tells the application to drain, `new_owner` (as the owner file names it) having taken
    /// over; this process goes on as a standby without probation.
    fn drain(&mut self, new_owner: Option<&[u8]>, after_probation: bool) {
        let new_owner = new_owner.map(id::text);
        self.config
            .journal
            .record("stepped_down", json!({ "new_owner": new_owner, "after_probation": after_probation }));
        fds::lock(&self.config.shared).state.step_down();
        self.config.reporter.stopping();
        self.config.signal.fire();
        self.role = Role::Standby(None);
    }

    /// Serves the next event as a standby; `false` once stopped.
    fn as_standby(&mut self) -> bool {
        let Role::Standby(probation) = &mut self.role else { return true };
        let event = match self.held.pop_front() {
            Some(stream) => Ok(StandbyEvent::Newcomer(stream)),
            None => standby::next_event(&self.group, probation.as_mut()),
        };
        match event {
            Ok(StandbyEvent::Newcomer(stream)) => {
                self.backoff = ACCEPT_BACKOFF_MIN;
                self.hand_over_as_standby(stream)
            }
            Ok(StandbyEvent::RolledBack(rollback)) => self.roll_back(&rollback),
            Ok(StandbyEvent::NamedAgain) => {
                tracing::info!("the owner file names this process again; serving as the owner");
                self.become_owner_again()
            }
            Ok(StandbyEvent::ProbationOver(why)) => {
                tracing::info!(why, "the probation is over; stepping down");
                let named = self.group.owner_file.read().ok().flatten();
                self.drain(named.as_deref(), true);
                true
            }
            Err(e) if e.kind() == ErrorKind::Stopped => false,
            Err(e) => self.pause_after(&e),
        }
    }

    /// Serves a newcomer that connected to this standby, if the owner the owner file names is
    /// indeed gone; `false` once stopped.
    fn hand_over_as_standby(&mut self, stream: UnixStream) -> bool {
        let Role::Standby(probation) = &self.role else { return true };
        match self.group.owner_file.read() {
            Ok(Some(named)) if named.as_slice() != self.group.id && self.config.dir.is_live(&named) => {
                if probation.is_some() {
                    tracing::info!(owner = %id::text(&named), "refused a connection as a standby: the owner is live");
                    return true;
                }
                // Nobody needs this draining process's descriptors while the owner lives: the
                // connection asks for its id, which a newer process wants to reuse.
                tracing::info!(
                    "a newer process wants this id: giving up the upgrade socket and the standby role"
                );
                self.mark = None;
                self.config.socket.unlink();
                drop(stream);
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "refused a connection as a standby: cannot read the owner file");
                return true;
            }
        }
        let on_probation = probation.is_some();
        tracing::info!(on_probation, "a newcomer found the owner gone; handing over as a standby");
        let runner = SessionAs::Standby { reclaim: on_probation };
        let Ok(committed) = session(self.config, &self.group, stream, runner, &mut self.mark) else {
            return false;
        };
        self.held.extend(committed.held);
        match committed.outcome {
            Outcome::SteppedDown { new_owner } => {
                if on_probation {
                    // A newcomer of the same release may fail as the last one did: a new window.
                    self.role = Role::Standby(Some(Probation::new(
                        new_owner,
                        committed.newcomer,
                        self.config.probation,
                    )));
                }
                true
            }
            Outcome::StillOwner { failed_owner } => match &self.role {
                // The newcomer it served let go, or committed and died: the file named it.
                Role::Standby(Some(probation)) => {
                    let rollback = probation.rollback(failed_owner.as_deref());
                    self.roll_back(&rollback)
                }
                _ => true,
            },
            Outcome::LetGo => true,
        }
    }

    /// The probation's owner died and the owner file names this process again.
    fn roll_back(&mut self, rollback: &Rollback) -> bool {
        if !self.become_owner_again() {
            return false;
        }
        self.record_rollback(rollback);
        true
    }

    fn record_rollback(&self, rollback: &Rollback) {
        self.config.journal.record(
            "rolled_back",
            json!({ "failed_owner": rollback.failed_owner(), "took_ms": ms(rollback.took()) }),
        );
        self.config.rollbacks.record(rollback);
    }

    /// Back to serving as the owner, the application never told otherwise; `false` if stopped.
    fn become_owner_again(&mut self) -> bool {
        if !fds::lock(&self.config.shared).state.roll_back() {
            return false;
        }
        self.role = Role::Owner;
        self.mark = None;
        self.config.reporter.ready(&self.config.id);
        true
    }
}

/// Waits for a newcomer, a change of the owner file, or the stop.
fn next_event(group: &Group<'_>) -> io::Result<Idle> {
    let mut fds = vec![(group.stop, Interest::Read), (group.upgrade_socket.as_fd(), Interest::Read)];
    fds.extend(group.watch.fd().map(|watch| (watch, Interest::Read)));
    // Without a watch, the file is looked at on a period.
    let period = (!group.watch.is_available()).then_some(FALLBACK_IDLE);
    loop {
        let ready = poll::wait(&fds, period)?;
        if ready[0] {
            return Ok(Idle::Stopped);
        }
        if !ready.contains(&true) || ready.get(2) == Some(&true) {
            return Ok(Idle::FileChanged);
        }
        if let Some(stream) = accept_one(group.upgrade_socket)? {
            return Ok(Idle::Newcomer(stream));
        }
    }
}

/// After an accept error (out of descriptors or memory, say): logs it and waits `backoff`
/// before the next try, the socket kept open: the shortage may pass, and this process must stay
/// upgradable. Returns `false` if stopped meanwhile.
fn pause_after_accept_error(group: &Group<'_>, e: &dyn std::fmt::Display, backoff: Duration) -> bool {
    if backoff == ACCEPT_BACKOFF_MIN {
        tracing::warn!(error = %e, "cannot accept on the upgrade socket; retrying with a back-off");
    } else {
        tracing::debug!(error = %e, retry_in_ms = backoff.as_millis(), "still cannot accept on the upgrade socket");
    }
    match poll::wait(&[(group.stop, Interest::Read)], Some(backoff)) {
        Ok(ready) => !ready[0],
        // Cannot even wait: try again at once rather than give up being upgradable.
        Err(_) => true,
    }
}

/// Who runs a session.
#[derive(Debug, Clone, Copy)]
enum SessionAs {
    /// The owner: the store's state follows the handoff.
    Owner,
    /// A standby: the store stays as it is (its application has been told to drain, or is on
    /// probation); `reclaim` whether it records itself as owner if the newcomer lets go.
    Standby { reclaim: bool },
}

/// Runs one handoff and waits for its commit point; returns the outcome and the connections
/// that arrived meanwhile.
///
/// As the owner, this process's standby `mark` is made when the handoff starts (before the
/// newcomer can record itself) and removed when it ends without a commit, before the newcomer
/// sees the connection close where that is the end.
///
/// # Errors
///
/// [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if stopped meanwhile.
fn session(
    config: &ServerConfig,
    group: &Group<'_>,
    stream: UnixStream,
    runner: SessionAs,
    mark: &mut Option<StandbyMark>,
) -> Result<Committed> {
    let not_committed = || {
        let outcome = match runner {
            SessionAs::Owner => Outcome::StillOwner { failed_owner: None },
            SessionAs::Standby { .. } => Outcome::LetGo,
        };
        Committed { outcome, held: Vec::new(), newcomer: None }
    };
    // 0: a process this one cannot name (another PID namespace).
    let newcomer_pid = Some(peer_cred(&stream).map_or(0, |cred| cred.pid_number())).filter(|&pid| pid > 0);
    if let Err(e) = config.peer_policy.check(&stream, "reading the peer credentials of a newcomer") {
        tracing::warn!(error = %e, "refused a connection on the upgrade socket");
        config.journal.record_error("handoff_failed", &e, json!({ "newcomer_pid": newcomer_pid }));
        return Ok(not_committed());
    }
    let snapshot = {
        let mut inner = fds::lock(&config.shared);
        let begun = match runner {
            SessionAs::Owner => inner.state.begin_transfer(),
            SessionAs::Standby { .. } if inner.state == State::Stopped => Err(Error::stopped()),
            SessionAs::Standby { .. } => Ok(()),
        };
        match begun {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Stopped => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "not handing over");
                return Ok(not_committed());
            }
        }
        wire_entries::snapshot(&inner.entries)
    };
    let descriptors = snapshot.len();
    let owner = matches!(runner, SessionAs::Owner);
    if owner {
        StandbyMark::ensure(mark, &config.dir, group.id);
    }
    let started = Instant::now();
    let deadline = started.checked_add(config.upgrade_timeout);
    let handed = OwnerSession::new(stream, deadline, group.stop).and_then(|session| {
        match session.hand_over(&snapshot) {
            Ok(()) => Ok(session),
            Err(e) => {
                if owner {
                    *mark = None;
                }
                drop(session);
                Err(e)
            }
        }
    });
    // Everything of the session goes before the outcome is known: a newcomer that let go finds
    // this process holding what it held before.
    drop(snapshot);
    let reclaim = match runner {
        SessionAs::Owner => true,
        SessionAs::Standby { reclaim } => reclaim,
    };
    let committed = match handed {
        Ok(session) => {
            if let SessionAs::Owner = runner {
                fds::lock(&config.shared).state.await_commit();
            }
            tracing::debug!(
                elapsed_ms = ms(started.elapsed()),
                "the newcomer is ready; waiting for it to become the owner"
            );
            session.await_commit(group, reclaim)
        }
        Err(e) => Err(e),
    };
    match committed {
        Ok(committed) => {
            match &committed.outcome {
                Outcome::SteppedDown { new_owner } => {
                    tracing::info!(elapsed_ms = ms(started.elapsed()), "a newcomer took over");
                    config.journal.record(
                        "handed_over",
                        json!({ "new_owner": id::text(new_owner), "newcomer_pid": newcomer_pid,
                                "descriptors": descriptors, "handoff_ms": ms(started.elapsed()) }),
                    );
                }
                Outcome::StillOwner { .. } | Outcome::LetGo => {
                    if owner {
                        *mark = None;
                        fds::lock(&config.shared).state.remain_owner();
                    }
                }
            }
            Ok(committed)
        }
        Err(e) if e.kind() == ErrorKind::Stopped => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "handoff failed");
            config.journal.record_error("handoff_failed", &e, json!({ "newcomer_pid": newcomer_pid }));
            if owner {
                *mark = None;
                fds::lock(&config.shared).state.remain_owner();
            }
            Ok(not_committed())
        }
    }
}
