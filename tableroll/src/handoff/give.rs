//! The owner's side of a session: send the list and every descriptor, then wait for the
//! newcomer's ready handshake.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::protocol::messages::{ReadyReply, ReadyRequest, PROTOCOL_VERSION, READY_V0, READY_V1};
use crate::protocol::{frame, Channel, WireEntry};

/// Hands `entries` to the newcomer on `ch` and runs the owner's half of the ready handshake.
///
/// `Ok` means the newcomer is ready and this process must step down. Any error means it must
/// not: the newcomer disconnected, misbehaved, asked for a version we do not speak, or the
/// deadline passed.
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
            // Step down even if this write fails: zero owners is recoverable (the newcomer
            // sees its owner gone and takes over), two owners is not.
            if let Err(e) = frame::write(ch, 0, &ReadyReply::stepping_down()) {
                tracing::debug!(error = %e, "could not tell the newcomer we are stepping down");
            }
            Ok(())
        }
        other => Err(Error::protocol(format!("unexpected ready byte {other:#04x} from the newcomer"))),
    }
}
