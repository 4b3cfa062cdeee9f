//! How far a drain got: the state a [`DrainingListener`] shares with its streams and its
//! [`Drained`] futures.
//!
//! [`DrainingListener`]: super::DrainingListener
//! [`Drained`]: super::Drained

use tokio::time::Instant;

/// Where the listener and its connections are, shared with every [`Drained`].
///
/// [`Drained`]: super::Drained
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) phase: Phase,
    /// Connections accepted whose first bytes have not been read, and that are still open.
    pub(super) unread: usize,
}

/// Whether the listener still accepts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    #[default]
    Accepting,
    /// Stopped accepting; waits for first bytes until `deadline` (none: the timeout is too
    /// large to be represented).
    Draining { deadline: Option<Instant> },
}
