//! Entry points for fuzzers (each takes arbitrary bytes as if another process had sent them)
//! and benchmarks. Available with the `fuzzing` feature; not part of the stable API.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::handoff::{newcomer, owner};
use crate::protocol::{frame, version, Channel, WireEntry};

/// Decodes `data` as a version prefix, then as a frame header and body of each kind the
/// protocol has. Returns whether the descriptor list decoded.
pub fn decode_frames(data: &[u8]) -> bool {
    let _ = version::decode(data);
    let _ = frame::decode_object::<crate::protocol::messages::ReadyRequest>(data);
    let _ = frame::decode_object::<crate::protocol::messages::ReadyReply>(data);
    if let Some(header) = data.get(..4) {
        let _ = frame::body_len(header.try_into().unwrap_or([0; 4]), frame::MAX_LIST_FRAME);
    }
    frame::decode::<Vec<WireEntry>>(data).is_ok()
}

/// Runs a newcomer's receive over a socket pair whose other end sent `data` and closed.
/// Returns the number of descriptors received.
///
/// # Errors
///
/// Whatever the newcomer reports about `data`.
pub fn newcomer_receives(data: &[u8]) -> Result<usize> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| crate::Error::io("socketpair", e))?;
    // Writes what fits; a larger input is cut where the socket buffer fills, as a peer that
    // stopped sending would leave it.
    theirs.set_nonblocking(true).ok();
    let _ = (&theirs).write_all(data);
    drop(theirs);
    let ch = Channel::new(ours, Some(Instant::now() + Duration::from_secs(1)), None, "fuzz input")?;
    let mut entries = Vec::new();
    newcomer::receive(&ch, &mut entries)?;
    Ok(entries.len())
}

/// Runs an owner's side of a session, handing over one listener, to a newcomer that sent
/// `data` and closed. Returns whether the owner would step down.
pub fn owner_hands_over(data: &[u8]) -> bool {
    let Ok((ours, theirs)) = UnixStream::pair() else { return false };
    theirs.set_nonblocking(true).ok();
    let _ = (&theirs).write_all(data);
    let _ = theirs.shutdown(std::net::Shutdown::Write);
    let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { return false };
    let Ok(fd) = listener.as_fd().try_clone_to_owned() else { return false };
    let entries: Vec<(WireEntry, Arc<OwnedFd>)> = vec![(
        WireEntry { kind: "listener".into(), id: "web".into(), network: "tcp".into(), addr: String::new() },
        Arc::new(fd),
    )];
    let Ok(ch) = Channel::new(ours, Some(Instant::now() + Duration::from_secs(1)), None, "fuzz input") else {
        return false;
    };
    let stepped_down = owner::give(&ch, &entries).is_ok();
    drop(theirs);
    stepped_down
}

/// The version prefix of `version`, as written on the wire.
pub fn encode_version(version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    version::encode(version, &mut out);
    out
}

/// Splits a frame body into its version and the rest.
///
/// # Errors
///
/// A prefix that does not fit 32 bits.
pub fn decode_version(body: &[u8]) -> Result<(u32, &[u8])> {
    version::decode(body)
}

/// Encodes a descriptor list frame (header included) of `n` listener entries, as an owner
/// writes it. For benchmarks.
pub fn encode_list_frame(n: usize) -> Vec<u8> {
    let entries: Vec<WireEntry> = (0..n)
        .map(|i| WireEntry {
            kind: "listener".into(),
            id: format!("ln-{i}"),
            network: "tcp".into(),
            addr: format!("127.0.0.1:{}", 10_000 + i % 50_000),
        })
        .collect();
    frame::encode(crate::protocol::messages::PROTOCOL_VERSION, &entries).unwrap_or_default()
}

/// Decodes a whole descriptor list frame (header included); returns the number of entries.
/// For benchmarks.
///
/// # Errors
///
/// A malformed frame.
pub fn decode_list_frame(data: &[u8]) -> Result<usize> {
    let header: [u8; 4] = data.get(..4).and_then(|h| h.try_into().ok()).unwrap_or([0; 4]);
    let len = frame::body_len(header, frame::MAX_LIST_FRAME)?;
    let body = data.get(4..4 + len).ok_or_else(|| crate::Error::protocol("truncated frame"))?;
    let (_, list): (u32, Vec<WireEntry>) = frame::decode(body)?;
    Ok(list.len())
}

/// Removes the upgrade sockets of dead processes from the coordination directory `dir`, as a
/// newcomer does under the lock in `ready()`; live sockets and anything else are left alone.
/// For benchmarks.
///
/// # Errors
///
/// `dir` is not a writable directory.
pub fn remove_stale_sockets(dir: &std::path::Path) -> Result<()> {
    crate::coordination::Directory::open(dir)?.remove_stale_sockets(&[]);
    Ok(())
}
