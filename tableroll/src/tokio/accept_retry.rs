//! Accepting that outlives accept errors, for the servers that take connections from a
//! [`DrainingListener`] as a stream (axum's `serve`, tonic's `serve_with_incoming_shutdown`):
//! an error never ends the server.
//!
//! [`DrainingListener`]: super::DrainingListener

use std::future::Future;
use std::io;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use super::draining_listener::Accepted;
use super::{DrainingListener, TokioListener};

/// How long to wait before accepting again after an error that is not about one connection
/// (`EMFILE`: every accept would fail the same way at once), as axum does for its own listeners.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

impl<L: TokioListener> DrainingListener<L> {
    /// The next connection, or `None` once the drain signal fired. An error about one
    /// connection (`ECONNABORTED`) is skipped at once; after any other, accepting pauses for
    /// [`ACCEPT_ERROR_PAUSE`], or until the drain signal fires if that comes first.
    pub(super) fn poll_accept_retrying(&mut self, cx: &mut Context<'_>) -> Poll<Option<Accepted<L>>> {
        loop {
            if self.accept_pause.is_some() {
                if self.poll_drain(cx).is_ready() {
                    self.accept_pause = None;
                    return Poll::Ready(None);
                }
                if let Some(pause) = &mut self.accept_pause {
                    ready!(pause.as_mut().poll(cx));
                }
                self.accept_pause = None;
            }
            match ready!(self.poll_next(cx)) {
                Ok(accepted) => return Poll::Ready(accepted),
                Err(error) if concerns_one_connection(&error) => {
                    tracing::debug!(%error, "accepting a connection failed; accepting the next");
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        "accepting a connection failed; trying again in {ACCEPT_ERROR_PAUSE:?}"
                    );
                    self.accept_pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
            }
        }
    }
}

/// Whether an accept error is about the connection it would have given, not the process.
fn concerns_one_connection(error: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}
