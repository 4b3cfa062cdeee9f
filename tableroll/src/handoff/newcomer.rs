//! The newcomer's side of a session: take the lock and the owner's descriptors when joining;
//! at ready, run the handshake and record this process as the owner.
//!
//! Recording is the commit point (see [`super::owner`]): once the owner file names this
//! process, it is the owner and the previous one steps down, so the caller must have done every
//! fallible step of becoming the owner before [`Newcomer::take_over`]. Ours writes the file
//! before it closes the session (a Go newcomer closes first); the owner does not care which.

use std::collections::HashSet;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::coordination::{connect_to_owner, Directory, OwnerLock, OwnerWatch, GRACE};
use crate::error::{Error, ErrorKind, Result};
use crate::fault::{self, Point};
use crate::peer_policy::PeerPolicy;
use crate::protocol::messages::{
    ReadyReply, ReadyRequest, MAX_PAYLOAD, PROTOCOL_VERSION, READY_V0, READY_V1,
};
use crate::protocol::{frame, Channel, WireEntry};

/// What the owner handed over: each wire entry with its descriptor.
pub(crate) type Received = Vec<(WireEntry, OwnedFd)>;

/// A process that joined the group: it holds the coordination lock and, if there was a live
/// owner, an open session with it.
pub(crate) struct Newcomer {
    lock: OwnerLock,
    session: Option<Session>,
    /// The id of the process that handed over (the owner, or a standby), if one did.
    from: Option<Vec<u8>>,
}

/// The connection to the owner, kept open from joining to ready.
struct Session {
    stream: UnixStream,
    owner_version: u32,
    owner: OwnerWatch,
}

impl Newcomer {
    /// Takes the lock (waiting until `deadline`), reads the owner file and, if it names a live
    /// owner other than `id`, receives all its descriptors.
    ///
    /// If the owner is gone (its socket missing or refusing), or the file names `id` (a
    /// previous process with this id is gone), the descriptors come from a standby of ours (see
    /// `handoff::standby`) if there is a live one, the most recently marked first; otherwise
    /// there is no owner. An owner that dies while handing over leaves this process with what
    /// it received so far.
    ///
    /// # Errors
    ///
    /// The lock cannot be taken (see [`OwnerLock::acquire`]); the owner file holds an invalid
    /// id; connecting to the owner fails for another reason than its absence; the owner's peer
    /// credentials are refused by `policy`; the owner broke the protocol or did not hand over
    /// before `deadline`.
    pub(crate) fn join(
        dir: &Directory,
        id: &str,
        deadline: Option<Instant>,
        policy: &PeerPolicy,
    ) -> Result<(Newcomer, Received)> {
        let lock = OwnerLock::acquire(&dir.owner_file(), deadline)?;
        fault::hit(Point::NewcomerAfterLock);
        let owner_id = lock.read_owner()?;
        let (session, received, from) = match &owner_id {
            Some(owner) if owner == id.as_bytes() => {
                tracing::debug!(id, "the owner file names this id: a previous process with it is gone");
                inherit_from_standby(dir, &[owner], deadline, policy)
            }
            Some(owner) => match inherit(dir, owner, deadline, policy)? {
                Some(inherited) => inherited,
                None => {
                    tracing::info!(owner = %crate::id::text(owner), "the previous owner is gone");
                    inherit_from_standby(dir, &[owner, id.as_bytes()], deadline, policy)
                }
            },
            None => (None, Vec::new(), None),
        };
        Ok((Newcomer { lock, session, from }, received))
    }

    /// The id of the process that handed over (the owner, or a standby), if one did.
    pub(crate) fn from(&self) -> Option<&[u8]> {
        self.from.as_deref()
    }

    /// Runs the ready handshake with the owner (if there is one), then records `id` as the
    /// owner and closes the session. Returns the lock, still held, for the caller's last
    /// chores under it.
    ///
    /// A handshake that fails because the owner died is forgiven: this process holds every
    /// descriptor it sent.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::OwnerRefused`](crate::ErrorKind::OwnerRefused) if the owner is alive but the handshake failed (it refused, or
    /// `deadline` passed); [`ErrorKind::Stopped`](crate::ErrorKind::Stopped) if `cancel` became readable; [`ErrorKind::Io`](crate::ErrorKind::Io) if the
    /// owner file could not be written. In every case this process is not the owner, and the
    /// owner, seeing the session closed and the lock released, remains the owner.
    pub(crate) fn take_over(
        self,
        id: &str,
        deadline: Option<Instant>,
        cancel: BorrowedFd<'_>,
    ) -> Result<OwnerLock> {
        let Newcomer { lock, session, .. } = self;
        let open_session = match session {
            Some(session) => handshake(session, deadline, cancel)?,
            None => None,
        };
        fault::hit(Point::NewcomerBeforeOwnerFile);
        lock.write_owner(id.as_bytes())?;
        // The commit point: from here on this process is the owner.
        drop(open_session);
        Ok(lock)
    }
}

/// What a newcomer starts with: the session with the process that handed over (kept open
/// until ready), what it received, and from whom.
type Inherited = (Option<Session>, Received, Option<Vec<u8>>);

/// Receives the descriptors from the live standby most recently marked, leaving out the ids
/// in `except`; a standby that is gone or fails is passed over for the next. Nothing if there
/// is none: this process starts with fresh descriptors.
fn inherit_from_standby(
    dir: &Directory,
    except: &[&[u8]],
    deadline: Option<Instant>,
    policy: &PeerPolicy,
) -> Inherited {
    for standby in dir.standbys(except) {
        let name = crate::id::text(&standby);
        match inherit(dir, &standby, deadline, policy) {
            Ok(Some(inherited)) => {
                tracing::info!(standby = name, "received the descriptors from a previous owner standing by");
                return inherited;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(standby = name, error = %e, "a previous owner standing by did not hand over")
            }
        }
    }
    tracing::info!("no process holds the group's descriptors; starting with fresh ones");
    (None, Vec::new(), None)
}

/// Connects to the process `owner` (the one the owner file names, or a standby) and receives
/// its descriptors; `None` if it is gone.
fn inherit(
    dir: &Directory,
    owner: &[u8],
    deadline: Option<Instant>,
    policy: &PeerPolicy,
) -> Result<Option<Inherited>> {
    let owner_socket = dir
        .socket_path(owner)
        .map_err(|e| Error::protocol(format!("the owner file names an id that cannot be used: {e}")))?;
    let Some(stream) = connect_to_owner(&owner_socket, deadline)? else {
        return Ok(None);
    };
    policy.check(&stream, "reading the peer credentials of the owner")?;
    let from = owner;
    let owner = OwnerWatch::new(owner_socket, &stream);
    let ch = Channel::new(stream, deadline, None, "receiving descriptors from the owner")?;
    let mut received = Vec::new();
    match receive(&ch, &mut received) {
        Ok(owner_version) => {
            let session = Session { stream: ch.into_stream(), owner_version, owner };
            Ok(Some((Some(session), received, Some(from.to_vec()))))
        }
        // A broken connection (not a timeout: a slow owner is alive) from an owner that is
        // gone: keep the live descriptors it managed to send.
        Err(e) if matches!(e.kind(), ErrorKind::Protocol | ErrorKind::Io) && owner.is_gone(GRACE) => {
            tracing::warn!(error = %e, kept = received.len(), "the owner died while handing over; keeping what it sent");
            Ok(Some((None, received, Some(from.to_vec()))))
        }
        Err(e) => Err(e),
    }
}

/// Runs the handshake; a failure is forgiven if the owner turns out to be gone. Returns the
/// session to keep open until the owner file names this process.
fn handshake(
    session: Session,
    deadline: Option<Instant>,
    cancel: BorrowedFd<'_>,
) -> Result<Option<UnixStream>> {
    let result = Channel::new(session.stream, deadline, Some(cancel), "waiting for the owner to step down")
        .and_then(|ch| ready(&ch, session.owner_version).map(|()| ch.into_stream()));
    match result {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if e.kind() == ErrorKind::Stopped => Err(e),
        Err(e) if session.owner.is_gone(GRACE) => {
            tracing::warn!(error = %e, "the previous owner is gone; taking over with the descriptors it sent");
            Ok(None)
        }
        Err(e) => Err(Error::owner_refused(e)),
    }
}

/// Receives the descriptor list and then exactly one descriptor per entry, in list order, into
/// `entries`; returns the list's version (0 for a version 0 owner).
///
/// On error, `entries` holds the complete entries received before it: the caller decides
/// whether they are worth keeping (they are if the owner died midway).
pub(crate) fn receive(ch: &Channel<'_>, entries: &mut Received) -> Result<u32> {
    let (version, list): (u32, Vec<WireEntry>) = frame::read_list(ch)?;
    fault::hit(Point::NewcomerAfterList);
    let mut seen = HashSet::with_capacity(list.len());
    if let Some(dup) = list.iter().find(|e| !seen.insert(e.id.as_str())) {
        return Err(Error::protocol(format!("the owner listed id {:?} twice", dup.id)));
    }
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let total = list.len();
    entries.reserve(total);
    for (index, wire) in list.into_iter().enumerate() {
        let (_, fd) = ch.recv_fd(&mut payload).map_err(|e| {
            e.in_context(|| format!("receiving descriptor {} of {total} ({:?})", index + 1, wire.id))
        })?;
        entries.push((wire, fd));
        if index + 1 < total {
            fault::hit(Point::NewcomerBetweenFds);
        }
    }
    Ok(version)
}

/// The newcomer's half of the ready handshake: the version 0 byte to a version 0 owner; else
/// the version 1 byte, `{"version":1}`, and waiting for `{"msg":"stepping down"}`.
pub(crate) fn ready(ch: &Channel<'_>, owner_version: u32) -> Result<()> {
    if owner_version == 0 {
        return ch.write_all(&[READY_V0]);
    }
    let mut request = vec![READY_V1];
    request.extend(frame::encode(0, &ReadyRequest { version: PROTOCOL_VERSION })?);
    ch.write_all(&request)?;
    fault::hit(Point::NewcomerInHandshake);
    let (_, reply): (u32, ReadyReply) = frame::read_small(ch)?;
    if reply.msg != ReadyReply::STEPPING_DOWN {
        return Err(Error::protocol(format!("the owner answered {:?} instead of stepping down", reply.msg)));
    }
    Ok(())
}
