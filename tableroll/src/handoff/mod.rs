//! One upgrade session, both sides: the owner's ([`owner::OwnerSession`]: give, handshake, the
//! step-down decision) and the newcomer's ([`newcomer::Newcomer`]: take, handshake, recording
//! itself). This is the only layer where the descriptor store's entries, the wire and the
//! coordination directory meet ([`wire_entries`] maps the store's entries to the wire's), and
//! the home of the commit point (see [`owner`]).

pub(crate) mod newcomer;
pub(crate) mod owner;
pub(crate) mod standby;
pub(crate) mod wire_entries;
