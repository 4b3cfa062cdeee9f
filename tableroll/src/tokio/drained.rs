//! [`Drained`], the future for a server's graceful shutdown: it waits on the [`Progress`] of
//! a drain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

use super::progress::{Phase, Progress};

/// Resolves once a [`DrainingListener`] stopped accepting and every connection it accepted was
/// read from or closed, or its first-byte timeout passed. From
/// [`DrainingListener::drained`]; `Send + 'static`, for a server's graceful shutdown.
///
/// [`DrainingListener`]: super::DrainingListener
/// [`DrainingListener::drained`]: super::DrainingListener::drained
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "futures do nothing unless polled"]
pub struct Drained {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Drained {
    /// The future that waits on `progress`.
    pub(super) fn new(progress: watch::Receiver<Progress>) -> Drained {
        Drained { inner: Box::pin(drained(progress)) }
    }
}

impl Future for Drained {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained").finish_non_exhaustive()
    }
}

async fn drained(mut progress: watch::Receiver<Progress>) {
    // An error: the listener and all its connections are gone, so nothing is left to wait for.
    let deadline = match progress.wait_for(|p| p.phase != Phase::Accepting).await {
        Ok(p) => match p.phase {
            Phase::Draining { deadline } => deadline,
            Phase::Accepting => return,
        },
        Err(_) => return,
    };
    if progress.borrow().unread == 0 {
        return;
    }
    let all_read = progress.wait_for(|p| p.unread == 0);
    let Some(deadline) = deadline else {
        let _ = all_read.await;
        return;
    };
    if tokio::time::timeout_at(deadline, all_read).await.is_err() {
        let unread = progress.borrow().unread;
        tracing::debug!(unread, "first bytes not in before the first-byte timeout: drained anyway");
    }
}
