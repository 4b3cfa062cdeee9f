//! With the `axum` feature, [`DrainingListener`] is an `axum::serve::Listener`.

use std::future::poll_fn;
use std::io;

use super::{DrainingListener, DrainingStream, TokioListener};

/// For `axum::serve`: accepts until the drain signal, then stays pending (axum stops asking
/// once `drained` started its graceful shutdown). Accept errors are retried as axum's own
/// listeners do: at once if they concern one connection, after a second otherwise.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<L: TokioListener> axum::serve::Listener for DrainingListener<L> {
    type Io = DrainingStream<L::Stream>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match poll_fn(|cx| self.poll_accept_retrying(cx)).await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.get_ref().local_addr()
    }
}
