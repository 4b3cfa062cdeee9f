//! Tokio listeners and sockets from the descriptor store (the `tokio` feature).
