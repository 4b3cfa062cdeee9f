//! The newcomer's side of a session: receive the list and the descriptors, later run the ready
//! handshake.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::protocol::messages::{
    ReadyReply, ReadyRequest, MAX_PAYLOAD, PROTOCOL_VERSION, READY_V0, READY_V1,
};
use crate::protocol::{frame, Channel, WireEntry};

/// Receives the descriptor list and then exactly one descriptor per entry, in list order, into
/// `entries`; returns the list's version (0 for a version 0 owner).
///
/// On error, `entries` holds the complete entries received before it: the caller decides
/// whether they are worth keeping (they are if the owner died midway).
pub(crate) fn receive(ch: &Channel<'_>, entries: &mut Vec<(WireEntry, OwnedFd)>) -> Result<u32> {
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
