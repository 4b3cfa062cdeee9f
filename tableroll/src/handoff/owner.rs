//! The owner's side of a session: send the list and every descriptor, run the owner's half of
//! the ready handshake, then wait for the commit point.
//!
//! # The commit point
//!
//! The owner file is the single truth of who owns the group: a handoff commits when the file
//! names the newcomer, and nothing else counts. After answering "stepping down" (or reading a
//! version 0 ready byte) this process is *pending*: it keeps its listeners and its upgrade
//! socket and tells its application nothing yet. Then:
//!
//! - it **steps down** when the owner file names another id whose upgrade socket is live,
//!   whatever the order in which the newcomer closes the session and writes the file (a Go
//!   newcomer closes, writes, unlocks; ours writes, closes, unlocks; another may keep the session
//!   open). Writes are seen through an inotify watch on the directory, within moments;
//! - it **stays the owner** when the newcomer has let go while the file names no other live
//!   process: the lock is free (taken without waiting, the file read, the lock released), or a
//!   new connection arrives on the upgrade socket (only a lock holder connects, so the newcomer
//!   released it). If the file is then empty, or names a process that is not live (a writer that
//!   died halfway leaves its id followed by an old tail), this process writes its own id again
//!   under the lock.
//!
//! The newcomer's exit (its pidfd) does not decide by itself: a newcomer that recorded itself
//! and was replaced in turn is gone too. It frees the lock, which decides. A pending owner never
//! waits for the lock: a second newcomer may hold it while waiting for this process to serve it.
//! The upgrade timeout does not end the pending state either: a newcomer paused between the
//! handshake and its write holds the lock, and this process serves on until it resumes or exits.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coordination::{accept_one, Directory, HeldLock, OwnerFile, OwnerFileWatch};
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::id;
use crate::protocol::messages::{ReadyReply, ReadyRequest, PROTOCOL_VERSION, READY_V0, READY_V1};
use crate::protocol::{frame, Channel, WireEntry};
use crate::sys::peer_cred::peer_cred;
use crate::sys::pidfd;
use crate::sys::poll::{self, Interest};

/// How often a pending owner looks again whether the lock was released, at first (it doubles
/// up to [`RECHECK_MAX`]). A release makes no event of its own when the newcomer keeps the
/// file open and stays alive; everything else (a write, a close, an exit, a connection) wakes
/// the owner at once.
const RECHECK_MIN: Duration = Duration::from_millis(5);
const RECHECK_MAX: Duration = Duration::from_millis(250);
/// How often the owner file is read when no inotify watch could be set up: while pending, and
/// while serving.
pub(crate) const FALLBACK_PENDING: Duration = Duration::from_millis(2);
pub(crate) const FALLBACK_IDLE: Duration = Duration::from_millis(50);

/// At most this many connections are held, accepted, while pending; more wait in the backlog.
const MAX_HELD: usize = 64;

/// How a session ended for the owner.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The owner file names another live process, `new_owner`: this one drains.
    SteppedDown { new_owner: Vec<u8> },
    /// The handoff did not commit: this process owns the group (as before, or again).
    /// `failed_owner`: the process the owner file named, not live, when this one recorded
    /// itself over it (the newcomer committed and died at once, say).
    StillOwner { failed_owner: Option<Vec<u8>> },
    /// The handoff did not commit, the owner file names no live process, and this process,
    /// a draining standby, does not claim the group (see `reclaim` at
    /// [`OwnerSession::await_commit`]).
    LetGo,
}

/// What the owner watches to know whether it is still the owner: the group's directory and
/// owner file, its own id and upgrade socket, and its stop pipe.
pub(crate) struct Group<'a> {
    pub(crate) dir: &'a Directory,
    pub(crate) owner_file: &'a OwnerFile,
    pub(crate) watch: &'a OwnerFileWatch,
    pub(crate) id: &'a [u8],
    pub(crate) upgrade_socket: &'a UnixListener,
    pub(crate) stop: BorrowedFd<'a>,
}

/// The end of a session's wait for its commit point.
pub(crate) struct Committed {
    pub(crate) outcome: Outcome,
    /// Connections that arrived meanwhile, in order, to be served next.
    pub(crate) held: Vec<UnixStream>,
    /// The newcomer's process, when the outcome is [`Outcome::SteppedDown`], it is visible
    /// here and had not exited: the new owner, for a probation to watch.
    pub(crate) newcomer: Option<OwnedFd>,
}

impl Group<'_> {
    /// The other live process the owner file names, if it names one: the group's new owner.
    pub(crate) fn new_owner(&self) -> Option<Vec<u8>> {
        match self.owner_file.read() {
            Ok(Some(named)) if named != self.id && self.dir.is_live(&named) => Some(named),
            _ => None,
        }
    }

    /// The newcomer let go and this process holds the lock: decide, and, if `reclaim`, make
    /// the file name this process again if it names no live one (the id it named then is the
    /// outcome's `failed_owner`: an owner that took over and died before this process saw it
    /// step in).
    fn settle(&self, held: &HeldLock<'_>, reclaim: bool) -> Outcome {
        let named = match held.read_owner() {
            Ok(Some(named)) if named.as_slice() == self.id => {
                return Outcome::StillOwner { failed_owner: None }
            }
            Ok(Some(named)) if self.dir.is_live(&named) => return Outcome::SteppedDown { new_owner: named },
            _ if !reclaim => return Outcome::LetGo,
            Ok(named) => named,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the owner file");
                None
            }
        };
        match &named {
            Some(dead) => tracing::info!(
                named = %id::text(dead),
                "the owner file names a process that is not live; recording this process as owner again"
            ),
            None => tracing::info!(
                "the newcomer let go without becoming the owner; recording this process as owner again"
            ),
        }
        if let Err(e) = held.write_owner(self.id) {
            tracing::error!(error = %e, "could not record this process as owner again; it still serves");
        }
        Outcome::StillOwner { failed_owner: named }
    }
}

/// The owner's side of one session.
pub(crate) struct OwnerSession<'c> {
    /// The newcomer's process, when its pid is visible here. Before the connection, so that it
    /// is closed first: a newcomer that sees the connection close finds this process holding
    /// what it held before the session.
    newcomer: Option<OwnedFd>,
    ch: Channel<'c>,
}

impl<'c> OwnerSession<'c> {
    /// A session on `stream`, each step of the handoff bounded by `deadline` and cancelled by
    /// `stop` becoming readable.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the connection cannot be made non-blocking.
    pub(crate) fn new(stream: UnixStream, deadline: Option<Instant>, stop: BorrowedFd<'c>) -> Result<Self> {
        let newcomer = pidfd::of_peer(&stream);
        let ch =
            Channel::new(stream, deadline, Some(stop), "waiting for the newcomer to finish its handoff")?;
        Ok(OwnerSession { newcomer, ch })
    }

    /// Hands `entries` to the newcomer and runs the owner's half of the ready handshake.
    ///
    /// # Errors
    ///
    /// Any error means the newcomer may not take over: it disconnected, misbehaved, asked for a
    /// version we do not speak, or the deadline passed; [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if stopped.
    pub(crate) fn hand_over(&self, entries: &[(WireEntry, Arc<OwnedFd>)]) -> Result<()> {
        give(&self.ch, entries)
    }

    /// After the handshake: waits for the commit point (see the module docs). Returns the
    /// outcome and the connections that arrived meanwhile, accepted to see who made them and
    /// held, in order, to be served next if this process is still the owner.
    ///
    /// `reclaim`: whether this process records itself as the owner again when the newcomer
    /// let go and the file names no live process: the owner and a backup on probation do, a
    /// draining standby does not ([`Outcome::LetGo`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if stopped meanwhile.
    pub(crate) fn await_commit(self, group: &Group<'_>, reclaim: bool) -> Result<Committed> {
        // Our side is done: a newcomer reading on sees the end of the stream, as from a Go
        // owner, which closes here.
        let _ = self.ch.shutdown_write();
        let mut session = Some(self.ch);
        let mut newcomer = self.newcomer;
        let mut recheck = RECHECK_MIN;
        let mut held = Vec::new();
        let mut listening = true;
        let end = |outcome: Outcome, held, newcomer: Option<OwnedFd>| {
            let newcomer = newcomer.filter(|_| matches!(outcome, Outcome::SteppedDown { .. }));
            Ok(Committed { outcome, held, newcomer })
        };
        loop {
            if let Some(new_owner) = group.new_owner() {
                return end(Outcome::SteppedDown { new_owner }, held, newcomer);
            }
            match group.owner_file.try_lock() {
                Ok(Some(lock)) => return end(group.settle(&lock, reclaim), held, newcomer),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "could not try the coordination lock"),
            }
            let woke = wait_pending(group, session.as_ref(), newcomer.as_ref(), listening, recheck)?;
            if woke.connection {
                match accept_while_pending(group, &mut held) {
                    Arrival::LockHolder => {
                        // A newcomer connects holding the lock, having read this process's id:
                        // the first one released the lock without the file naming another
                        // live process.
                        if let Some(new_owner) = group.new_owner() {
                            return end(Outcome::SteppedDown { new_owner }, held, newcomer);
                        }
                        if !reclaim {
                            return end(Outcome::LetGo, held, newcomer);
                        }
                        tracing::info!("the next lock holder connected while the newcomer had not become the owner; remaining the owner");
                        return end(Outcome::StillOwner { failed_owner: None }, held, newcomer);
                    }
                    Arrival::Other => listening = held.len() < MAX_HELD,
                    // Cannot accept now (out of descriptors, say): the lock and the file still
                    // decide, and the connection waits in the backlog.
                    Arrival::CannotAccept => listening = false,
                }
            }
            if woke.session && session.as_ref().is_some_and(|ch| ch.discard_pending().unwrap_or(true)) {
                session = None;
            }
            if woke.newcomer_exited {
                // Its lock went with it; the next look decides.
                newcomer = None;
            }
            if woke.watch {
                group.watch.take_changes();
            }
            if woke.nothing {
                recheck = (recheck * 2).min(RECHECK_MAX);
            }
        }
    }
}

/// Who connected to a pending owner.
enum Arrival {
    /// The process that holds the coordination lock.
    LockHolder,
    /// Someone else (or nobody after all, or a process this one cannot name): not a sign.
    Other,
    CannotAccept,
}

/// Accepts a connection that arrived while pending, keeps it in `held`, and tells whether the
/// process behind it holds the coordination lock. Only a lock holder connects in the protocol,
/// but any process of the user can: a connection alone does not show the newcomer let go.
fn accept_while_pending(group: &Group<'_>, held: &mut Vec<UnixStream>) -> Arrival {
    let stream = match accept_one(group.upgrade_socket) {
        Ok(Some(stream)) => stream,
        Ok(None) => return Arrival::Other,
        Err(e) => {
            tracing::debug!(error = %e, "cannot accept while waiting for the newcomer to become the owner");
            return Arrival::CannotAccept;
        }
    };
    // 0: a process this one cannot name (another PID namespace).
    let from = peer_cred(&stream).map_or(0, |cred| cred.pid_number());
    held.push(stream);
    match group.owner_file.lock_holder() {
        Some(holder) if from > 0 && u32::try_from(from).ok() == Some(holder) => Arrival::LockHolder,
        _ => Arrival::Other,
    }
}

/// What woke a pending owner.
#[derive(Debug, Default)]
struct Woke {
    session: bool,
    newcomer_exited: bool,
    watch: bool,
    connection: bool,
    nothing: bool,
}

fn wait_pending(
    group: &Group<'_>,
    session: Option<&Channel<'_>>,
    newcomer: Option<&OwnedFd>,
    listening: bool,
    recheck: Duration,
) -> Result<Woke> {
    let mut fds = vec![(group.stop, Interest::Read)];
    let optional = [
        listening.then(|| group.upgrade_socket.as_fd()),
        group.watch.fd(),
        session.map(AsFd::as_fd),
        newcomer.map(AsFd::as_fd),
    ];
    let mut index = [None; 4];
    for (slot, fd) in index.iter_mut().zip(optional) {
        if let Some(fd) = fd {
            *slot = Some(fds.len());
            fds.push((fd, Interest::Read));
        }
    }
    let [connection_at, watch_at, session_at, newcomer_at] = index;
    let period = if group.watch.is_available() { recheck } else { FALLBACK_PENDING };
    let ready = poll::wait(&fds, Some(period))
        .map_err(|e| Error::io("waiting for the newcomer to become the owner", e))?;
    if ready[0] {
        return Err(Error::stopped());
    }
    let fired = |at: Option<usize>| at.is_some_and(|i| ready[i]);
    Ok(Woke {
        connection: fired(connection_at),
        watch: fired(watch_at),
        session: fired(session_at),
        newcomer_exited: fired(newcomer_at),
        nothing: !ready.contains(&true),
    })
}

/// Hands `entries` to the newcomer on `ch` and runs the owner's half of the ready handshake.
///
/// `Ok` means the newcomer is ready and was told this process steps down. Any error means it
/// may not take over: the newcomer disconnected, misbehaved, asked for a version we do not
/// speak, or the deadline passed.
pub(crate) fn give(ch: &Channel<'_>, entries: &[(WireEntry, Arc<OwnedFd>)]) -> Result<()> {
    let list: Vec<&WireEntry> = entries.iter().map(|(wire, _)| wire).collect();
    frame::write(ch, PROTOCOL_VERSION, &list)?;
    fault::hit(Point::OwnerAfterList);
    for (index, (wire, fd)) in entries.iter().enumerate() {
        ch.send_fd(&wire.payload(), fd.as_fd())?;
        if index + 1 < entries.len() {
            fault::hit(Point::OwnerBetweenFds);
        }
    }
    fault::hit(Point::OwnerBeforeReadyByte);
    let mut byte = [0u8; 1];
    ch.read_exact(&mut byte).map_err(|e| e.in_context(|| "waiting for the ready handshake".into()))?;
    match byte[0] {
        READY_V0 => Ok(()),
        READY_V1 => {
            let (_, request): (u32, ReadyRequest) = frame::read_small(ch)?;
            if request.version != PROTOCOL_VERSION {
                return Err(Error::protocol(format!(
                    "newcomer speaks protocol version {}, we speak {PROTOCOL_VERSION}",
                    request.version
                )));
            }
            fault::hit(Point::OwnerBeforeSteppingDown);
            // The answer may not arrive (the newcomer gave up meanwhile, say): the commit point
            // decides either way.
            if let Err(e) = frame::write(ch, 0, &ReadyReply::stepping_down()) {
                tracing::debug!(error = %e, "could not tell the newcomer we are stepping down");
            }
            Ok(())
        }
        other => Err(Error::protocol(format!("unexpected ready byte {other:#04x} from the newcomer"))),
    }
}
