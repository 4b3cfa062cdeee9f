//! Lame-duck keep-alive: once a [`DrainingListener`] drains, HTTP/1 responses say
//! `Connection: close`, so that a client reusing a kept-alive connection gets its answer and
//! opens its next connection to the new owner, instead of racing a close.
//!
//! [`DrainingListener`]: super::DrainingListener

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use tokio::sync::watch;

use super::progress::Progress;

/// A [`tower` layer](tower_layer::Layer) that adds `Connection: close` to every HTTP/1 response
/// completed once its [`DrainingListener`] was told to drain; from
/// [`DrainingListener::connection_close`].
///
/// With it, a connection kept alive across the drain signal is not cut between two requests:
/// its next request is served, answered with `Connection: close`, and the server closes the
/// connection after that answer (hyper does on that header), while the client, told so, sends
/// its following request on a new connection, to the new owner. Meanwhile
/// [`Drained`](super::Drained) waits, up to the listener's
/// [keep-alive grace](super::DrainingListener::keep_alive_grace), for the HTTP/1 connections to close
/// that way before it starts the server's graceful shutdown, which closes those still idle.
///
/// HTTP/2 responses are left as they are (the header is not allowed there; the graceful
/// shutdown's `GOAWAY` does this job).
///
/// [`DrainingListener`]: super::DrainingListener
/// [`DrainingListener::connection_close`]: super::DrainingListener::connection_close
/// [`DrainingListener::keep_alive_grace`]: super::DrainingListener::keep_alive_grace
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone)]
pub struct ConnectionCloseLayer {
    progress: watch::Receiver<Progress>,
}

impl ConnectionCloseLayer {
    pub(super) fn new(progress: watch::Receiver<Progress>) -> Self {
        ConnectionCloseLayer { progress }
    }

    /// `inner` with `Connection: close` on its HTTP/1 responses once the listener drains: what
    /// [`Layer::layer`](tower_layer::Layer::layer) gives, without the trait in scope (for a
    /// hyper `service_fn`, say).
    pub fn service<S>(&self, inner: S) -> ConnectionClose<S> {
        ConnectionClose { inner, progress: self.progress.clone() }
    }
}

impl<S> tower_layer::Layer<S> for ConnectionCloseLayer {
    type Service = ConnectionClose<S>;

    fn layer(&self, inner: S) -> ConnectionClose<S> {
        self.service(inner)
    }
}

/// The service of [`ConnectionCloseLayer`]: `inner`, with `Connection: close` on its HTTP/1
/// responses once the listener drains. A [`tower_service::Service`] and a
/// [`hyper::service::Service`], for axum's `Router::layer` and for hyper-util's
/// `serve_connection` alike.
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone)]
pub struct ConnectionClose<S> {
    inner: S,
    progress: watch::Receiver<Progress>,
}

impl<S> ConnectionClose<S> {
    /// The response future for a request of `version`.
    fn respond<F>(&self, version: Version, inner: F) -> ConnectionCloseFuture<F> {
        let http1 = version < Version::HTTP_2;
        ConnectionCloseFuture { inner, progress: http1.then(|| self.progress.clone()) }
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for ConnectionClose<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ConnectionCloseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let version = request.version();
        let inner = self.inner.call(request);
        self.respond(version, inner)
    }
}

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for ConnectionClose<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ConnectionCloseFuture<S::Future>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        let version = request.version();
        self.respond(version, self.inner.call(request))
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ConnectionClose`].
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug)]
    pub struct ConnectionCloseFuture<F> {
        #[pin]
        inner: F,
        // For an HTTP/1 request: where to see whether the listener drains.
        progress: Option<watch::Receiver<Progress>>,
    }
}

impl<F, ResBody, E> Future for ConnectionCloseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(progress) = this.progress {
            if progress.borrow().phase.is_draining() {
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        Poll::Ready(Ok(response))
    }
}
