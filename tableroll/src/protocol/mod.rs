//! Bytes on the wire: frames, the version prefix, descriptor messages and the ready handshake
//! (the `SCM_RIGHTS` system calls themselves are in `sys::scm_rights`).
//!
//! This layer knows nothing of files, directories or ownership: it moves messages over a
//! connected Unix stream socket. See `PROTOCOL.md` for the contract.

pub(crate) mod channel;
pub(crate) mod frame;
pub(crate) mod messages;
pub(crate) mod version;

#[cfg(test)]
mod proptests;

pub(crate) use channel::Channel;
pub(crate) use messages::WireEntry;
