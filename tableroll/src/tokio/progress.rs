//! How far a drain got: the state a [`DrainingListener`] shares with its streams, its
//! [`Drained`] futures and its [`ConnectionClose`] services.
//!
//! [`DrainingListener`]: super::DrainingListener
//! [`Drained`]: super::Drained
//! [`ConnectionClose`]: super::ConnectionClose

use tokio::time::Instant;

/// Where the listener and its connections are.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) phase: Phase,
    /// Connections accepted whose first bytes have not been read, and that are still open.
    pub(super) unread: usize,
    /// Connections still open that are not HTTP/2 (HTTP/1, or not read from yet): those that a
    /// server's graceful shutdown would close between two requests.
    pub(super) open_http1: usize,
}

/// Whether the listener still accepts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    #[default]
    Accepting,
    /// Stopped accepting. `None` for a deadline too far to be represented.
    Draining {
        /// Until when the connections accepted may take to deliver a request head.
        head_deadline: Option<Instant>,
        /// Until when kept-alive HTTP/1 connections get to send one more request.
        keep_alive_deadline: Option<Instant>,
    },
}

impl Phase {
    pub(super) fn is_draining(self) -> bool {
        self != Phase::Accepting
    }

    /// The head deadline once draining.
    pub(super) fn head_deadline(self) -> Option<Option<Instant>> {
        match self {
            Phase::Accepting => None,
            Phase::Draining { head_deadline, .. } => Some(head_deadline),
        }
    }
}
