//! With the `axum` feature, [`DrainingListener`] is an `axum::serve::Listener`.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use super::{DrainingListener, DrainingStream, TokioListener};

/// How long to wait before accepting again after an error that is not about one connection
/// (`EMFILE`), as axum does for its own listeners.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// For `axum::serve`: accepts until the drain signal, then stays pending (axum stops asking
/// once `drained` started its graceful shutdown). Accept errors are retried as axum's own
/// listeners do: at once if they concern one connection, after a second otherwise.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<L: TokioListener> axum::serve::Listener for DrainingListener<L> {
    type Io = DrainingStream<L::Stream>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match poll_fn(|cx| self.poll_next(cx)).await {
                Ok(Some(accepted)) => return accepted,
                Ok(None) => return std::future::pending().await,
                Err(e) => self.pause_after(e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.get_ref().local_addr()
    }
}

impl<L: TokioListener> DrainingListener<L> {
    /// Returns at once after an error about one connection; otherwise after
    /// [`ACCEPT_ERROR_PAUSE`], or earlier if the drain signal fires meanwhile.
    async fn pause_after(&mut self, error: io::Error) {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
            tracing::debug!(%error, "accepting a connection failed; accepting the next");
            return;
        }
        tracing::error!(%error, "accepting a connection failed; trying again in {ACCEPT_ERROR_PAUSE:?}");
        let mut pause = pin!(tokio::time::sleep(ACCEPT_ERROR_PAUSE));
        poll_fn(|cx| match self.poll_drain(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => pause.as_mut().poll(cx),
        })
        .await;
    }
}
