//! [`Drained`], the future for a server's graceful shutdown: it waits on the [`Progress`] of
//! a drain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::sync::watch;
use tokio::time::Instant;

use super::progress::{Phase, Progress};

/// Resolves once a [`DrainingListener`] stopped accepting, every connection it accepted was read
/// from or closed (or its request-head timeout passed), and every HTTP/1 connection closed (or
/// its keep-alive grace passed). From
/// [`DrainingListener::drained`]; `Send + 'static`, for a server's graceful shutdown. Polled
/// again once it resolved, it is ready at once.
///
/// [`DrainingListener`]: super::DrainingListener
/// [`DrainingListener::drained`]: super::DrainingListener::drained
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "futures do nothing unless polled"]
pub struct Drained {
    /// Until it resolved: polled again after that, it is ready at once.
    inner: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Drained {
    /// The future that waits on `progress`.
    pub(super) fn new(progress: watch::Receiver<Progress>) -> Drained {
        Drained { inner: Some(Box::pin(drained(progress))) }
    }
}

impl Future for Drained {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(inner) = &mut self.inner {
            ready!(inner.as_mut().poll(cx));
            self.inner = None;
        }
        Poll::Ready(())
    }
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained").finish_non_exhaustive()
    }
}

async fn drained(mut progress: watch::Receiver<Progress>) {
    // An error: the listener and all its connections are gone, so nothing is left to wait for.
    let Ok(phase) = progress.wait_for(|p| p.phase.is_draining()).await.map(|p| p.phase) else {
        return;
    };
    let Phase::Draining { head_deadline, keep_alive_deadline } = phase else {
        return;
    };
    if !wait_until(&mut progress, |p| p.unread == 0, head_deadline).await {
        let unread = progress.borrow().unread;
        tracing::debug!(unread, "first bytes not in before the request-head timeout: drained anyway");
    }
    if !wait_until(&mut progress, |p| p.open_http1 == 0, keep_alive_deadline).await {
        let open = progress.borrow().open_http1;
        tracing::debug!(open, "HTTP/1 connections still open after the keep-alive grace: drained anyway");
    }
}

/// Waits until `condition` holds or `deadline` passes (`None`: never); whether it held. With the
/// listener and every connection gone, it holds.
async fn wait_until(
    progress: &mut watch::Receiver<Progress>,
    condition: impl FnMut(&Progress) -> bool,
    deadline: Option<Instant>,
) -> bool {
    let held = progress.wait_for(condition);
    match deadline {
        None => {
            let _ = held.await;
            true
        }
        Some(deadline) => tokio::time::timeout_at(deadline, held).await.is_ok(),
    }
}
