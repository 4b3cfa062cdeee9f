//! [`DrainingListener`] as a [`Stream`] of connections, for servers that take one (tonic's
//! `serve_with_incoming_shutdown`, or an accept loop on `StreamExt::next`).
//!
//! [`DrainingListener`]: super::DrainingListener

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use super::{Drained, DrainingListener, DrainingStream, TokioListener};

/// The connections accepted, until the drain signal; the stream then yields nothing more and
/// ends once [`drained`](DrainingListener::drained) resolves, not before: a server that shuts
/// everything down when its stream of connections ends (tonic's `serve_with_incoming` does)
/// would otherwise cut the connections not yet read from. Never yields an error: an accept
/// error is logged and accepting goes on, at once if it concerned one connection, after a
/// second otherwise (`EMFILE`).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<L: TokioListener> Stream for DrainingListener<L> {
    type Item = Result<DrainingStream<L::Stream>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.stream_end.is_none() {
            if let Some((conn, _addr)) = ready!(this.poll_accept_retrying(cx)) {
                return Poll::Ready(Some(Ok(conn)));
            }
        }
        let end = this.stream_end.get_or_insert_with(|| Drained::new(this.progress.subscribe()));
        Pin::new(end).poll(cx).map(|()| None)
    }
}
