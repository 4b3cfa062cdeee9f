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
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::coordination::{Directory, OwnerFile, OwnerFileWatch, UpgradeSocket};
use crate::error::{Error, ErrorKind, Result};
use crate::fds::{self, Shared};
use crate::handoff::owner::{Group, Outcome, OwnerSession, FALLBACK_IDLE};
use crate::handoff::wire_entries;
use crate::peer_policy::PeerPolicy;
use crate::probation::Rollbacks;
use crate::signal::UpgradeComplete;
use crate::sys::poll::{self, Interest};
use crate::systemd::Reporter;

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

fn serve(config: &ServerConfig, owner_file: &OwnerFile, watch: &OwnerFileWatch) {
    let group = Group {
        dir: &config.dir,
        owner_file,
        watch,
        id: config.id.as_bytes(),
        upgrade_socket: config.socket.listener(),
        stop: config.stop.as_fd(),
    };
    let mut backoff = ACCEPT_BACKOFF_MIN;
    // Connections accepted while a session waited for its commit point, served first.
    let mut held = VecDeque::new();
    loop {
        let event = match held.pop_front() {
            Some(stream) => Ok(Idle::Newcomer(stream)),
            None => next_event(&group),
        };
        let outcome = match event {
            Ok(Idle::Stopped) => return,
            Ok(Idle::FileChanged) => {
                // Events about other files (a newcomer binding its socket, say) need no look.
                if watch.take_changes() && group.replaced() {
                    Outcome::SteppedDown
                } else {
                    Outcome::StillOwner
                }
            }
            Ok(Idle::Newcomer(stream)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match session(config, &group, stream) {
                    Ok((outcome, arrived)) => {
                        held.extend(arrived);
                        outcome
                    }
                    Err(_) => return,
                }
            }
            Err(e) => {
                if !pause_after_accept_error(&group, &e, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                Outcome::StillOwner
            }
        };
        if outcome == Outcome::SteppedDown {
            fds::lock(&config.shared).state.step_down();
            tracing::info!("the owner file names a new live owner; stepping down");
            config.reporter.stopping();
            config.signal.fire();
            // Nobody needs to reach this process any more: the connections it held close
            // unanswered (as a Go owner closes them), and the upgrade socket goes when the
            // thread's config does.
            return;
        }
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
        if let Some(stream) = accept(group.upgrade_socket)? {
            return Ok(Idle::Newcomer(stream));
        }
    }
}

/// Accepts one connection; `None` when there was none after all.
fn accept(listener: &UnixListener) -> io::Result<Option<UnixStream>> {
    match listener.accept() {
        Ok((stream, _)) => Ok(Some(stream)),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
        // The newcomer gave up between connect and accept.
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(None),
        Err(e) => Err(e),
    }
}

/// After an accept error (out of descriptors or memory, say): logs it and waits `backoff`
/// before the next try, the socket kept open: the shortage may pass, and this process must stay
/// upgradable. Returns `false` if stopped meanwhile.
fn pause_after_accept_error(group: &Group<'_>, e: &io::Error, backoff: Duration) -> bool {
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

/// Runs one handoff and waits for its commit point; returns the outcome and the connections
/// that arrived meanwhile.
///
/// # Errors
///
/// [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if stopped meanwhile.
fn session(
    config: &ServerConfig,
    group: &Group<'_>,
    stream: UnixStream,
) -> Result<(Outcome, Vec<UnixStream>)> {
    if let Err(e) = config.peer_policy.check(&stream, "reading the peer credentials of a newcomer") {
        tracing::warn!(error = %e, "refused a connection on the upgrade socket");
        return Ok((Outcome::StillOwner, Vec::new()));
    }
    let snapshot = {
        let mut inner = fds::lock(&config.shared);
        match inner.state.begin_transfer() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Stopped => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "not handing over");
                return Ok((Outcome::StillOwner, Vec::new()));
            }
        }
        wire_entries::snapshot(&inner.entries)
    };
    let started = Instant::now();
    let deadline = started.checked_add(config.upgrade_timeout);
    let handed = OwnerSession::new(stream, deadline, group.stop)
        .and_then(|session| session.hand_over(&snapshot).map(|()| session));
    // Everything of the session goes before the outcome is known: a newcomer that let go finds
    // this process holding what it held before.
    drop(snapshot);
    let outcome = match handed {
        Ok(session) => {
            fds::lock(&config.shared).state.await_commit();
            tracing::debug!(
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "the newcomer is ready; waiting for it to become the owner"
            );
            session.await_commit(group)
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok((Outcome::SteppedDown, held)) => {
            tracing::info!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "a newcomer took over");
            Ok((Outcome::SteppedDown, held))
        }
        Ok((Outcome::StillOwner, held)) => {
            fds::lock(&config.shared).state.remain_owner();
            Ok((Outcome::StillOwner, held))
        }
        Err(e) if e.kind() == ErrorKind::Stopped => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "handoff failed; remaining the owner");
            fds::lock(&config.shared).state.remain_owner();
            Ok((Outcome::StillOwner, Vec::new()))
        }
    }
}
