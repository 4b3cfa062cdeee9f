//! The tokio adapter (the `tokio` feature): tokio listeners and sockets straight from the
//! descriptor store (`fds`), and a listener that drains without dropping requests.
//!
//! When a newer generation took over, the old one must stop accepting and finish what it
//! accepted. HTTP servers on hyper-util (axum's `serve` among them) finish gracefully only the
//! connections they have read from: one accepted but not read yet is taken for idle and cancelled
//! when the graceful shutdown starts. During an upgrade such a connection is no idle keep-alive
//! but a client whose request is on its way, so it would be reset. [`DrainingListener`] stops
//! accepting at the drain signal and resolves [`Drained`], the future to start the server's
//! graceful shutdown with, only once every connection it accepted has been read from.
//!
//! One concept a file: `tokio_listener` (the listeners it can wrap), `draining_listener`,
//! `draining_stream` (a connection, which reports its first request), `progress` (what the
//! listener shares with its streams), `drained` (the future that waits on it), `accept_retry`
//! (accepting through accept errors), `incoming` (the listener as a `Stream` of connections),
//! `axum` (the `axum::serve::Listener` impl, with the `axum` feature) and `tonic` (tonic's
//! `Connected` for the streams, with the `tonic` feature).

mod accept_retry;
#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "http")]
mod connection_close;
mod drained;
mod draining_listener;
mod draining_stream;
mod fds;
mod incoming;
mod progress;
#[cfg(test)]
mod tests;
mod tokio_listener;
#[cfg(feature = "tonic")]
mod tonic;

#[cfg(feature = "http")]
pub use connection_close::{ConnectionClose, ConnectionCloseFuture, ConnectionCloseLayer};
pub use drained::Drained;
pub use draining_listener::DrainingListener;
pub use draining_stream::DrainingStream;
pub use tokio_listener::TokioListener;
