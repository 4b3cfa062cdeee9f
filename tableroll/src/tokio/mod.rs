//! The tokio adapter (the `tokio` feature).

mod draining_listener;
mod fds;

pub use draining_listener::{Drained, DrainingListener, DrainingStream, TokioListener};
