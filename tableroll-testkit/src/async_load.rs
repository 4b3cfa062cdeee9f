//! Closed-loop load over HTTP/2 and gRPC, for the servers that speak them (the hyper and tonic
//! examples): a few client tasks on a tokio runtime of their own, each with one call under way
//! at a time and no retry, counting answers by the server that gave them and keeping every
//! failure's message.
//!
//! Two ways to hold connections: a new one for each call, or one shared by every client, as an
//! HTTP/2 or gRPC client does (hyper-util's pooled client, tonic's `Channel`), which opens a new
//! connection when the one it has goes away.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::shared_report::{SharedReport, Summary};
use crate::TIMEOUT;

/// What the clients send, and over which connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// `GET /` over HTTP/2 (prior knowledge), a new connection for each request.
    Http2NewConnection,
    /// `GET /` over HTTP/2 on a pooled client shared by all the clients.
    Http2Shared,
    /// The gRPC health service's `Check`, a new connection for each call.
    GrpcNewConnection,
    /// The gRPC health service's `Check` on one `Channel` shared by all the clients.
    GrpcShared,
}

/// The answers and failures so far.
#[derive(Debug, Default, Clone)]
pub struct AsyncReport {
    pub sent: u64,
    pub ok: u64,
    /// Answers by the id that gave them: the pid in an HTTP body (`hello from PID`); `grpc` or
    /// `grpc-draining` for a gRPC answer (see [`Calls::GrpcShared`]'s `check`).
    pub served_by: BTreeMap<String, u64>,
    /// One line per failed call: its number and the error.
    pub failures: Vec<String>,
}

impl AsyncReport {
    pub fn summary(&self) -> String {
        format!("{} sent, {} answered, {} failed", self.sent, self.ok, self.failures.len())
    }
}

impl Summary for AsyncReport {
    fn summary(&self) -> String {
        AsyncReport::summary(self)
    }
}

struct Shared {
    report: SharedReport<AsyncReport>,
    stop: AtomicBool,
}

/// Running load; [`AsyncLoad::stop`] ends it and returns the report.
pub struct AsyncLoad {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl AsyncLoad {
    /// Starts `clients` clients sending `calls` to `addr` (`HOST:PORT`).
    pub fn start(addr: &str, calls: Calls, clients: usize) -> AsyncLoad {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the load");
        let shared = Arc::new(Shared {
            report: SharedReport::new(AsyncReport::default()),
            stop: AtomicBool::new(false),
        });
        let uri: hyper::Uri = format!("http://{addr}/").parse().expect("an HTTP URI");
        let pooled = Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new());
        let channel = {
            let _entered = runtime.enter();
            Endpoint::from(uri.clone()).tcp_nodelay(true).connect_lazy()
        };
        let clients = (0..clients)
            .map(|_| {
                let client =
                    Caller { calls, uri: uri.clone(), pooled: pooled.clone(), channel: channel.clone() };
                runtime.spawn(client.run(Arc::clone(&shared)))
            })
            .collect();
        AsyncLoad { runtime, shared, clients }
    }

    pub fn report(&self) -> AsyncReport {
        self.shared.report.lock().clone()
    }

    /// Waits until `n` more calls than now were answered.
    pub fn wait_more_ok(&self, n: u64) {
        let target = self.shared.report.lock().ok + n;
        self.shared.report.wait_until(&format!("{target} answers"), |r| r.ok >= target);
    }

    /// Waits until the server `id` answered `n` calls in all.
    pub fn wait_served_by(&self, id: &str, n: u64) {
        let what = format!("{n} answers by {id}");
        self.shared.report.wait_until(&what, |r| r.served_by.get(id).copied().unwrap_or(0) >= n);
    }

    /// Stops the clients after their call under way, and returns the report.
    pub fn stop(self) -> AsyncReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            let ended = self.runtime.block_on(async { tokio::time::timeout(TIMEOUT, client).await });
            assert!(matches!(ended, Ok(Ok(()))), "a load client did not stop: {ended:?}");
        }
        self.shared.report.lock().clone()
    }
}

/// One client.
struct Caller {
    calls: Calls,
    uri: hyper::Uri,
    pooled: Client<HttpConnector, Empty<Bytes>>,
    channel: Channel,
}

impl Caller {
    async fn run(self, shared: Arc<Shared>) {
        while !shared.stop.load(Ordering::SeqCst) {
            let seq = {
                let mut report = shared.report.lock();
                report.sent += 1;
                report.sent
            };
            let outcome =
                tokio::time::timeout(TIMEOUT, self.call()).await.unwrap_or_else(|_| Err("timed out".into()));
            shared.report.record(|report| match outcome {
                Ok(id) => {
                    report.ok += 1;
                    *report.served_by.entry(id).or_insert(0) += 1;
                }
                Err(error) => report.failures.push(format!("call {seq}: {error}")),
            });
        }
    }

    /// One call; the id of the server that answered it.
    async fn call(&self) -> Result<String, String> {
        match self.calls {
            Calls::Http2NewConnection => self.get_on_new_connection().await,
            Calls::Http2Shared => {
                let response = self.pooled.get(self.uri.clone()).await.map_err(|e| format!("{e:?}"))?;
                hello_id(response).await
            }
            Calls::GrpcNewConnection => {
                let channel = Endpoint::from(self.uri.clone()).tcp_nodelay(true);
                let channel = channel.connect().await.map_err(|e| format!("connecting: {e:?}"))?;
                check(channel).await
            }
            Calls::GrpcShared => check(self.channel.clone()).await,
        }
    }

    async fn get_on_new_connection(&self) -> Result<String, String> {
        let authority = self.uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        let stream =
            tokio::net::TcpStream::connect(&authority).await.map_err(|e| format!("connecting: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e:?}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(self.uri.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("{e:?}"))?;
        hello_id(response).await
    }
}

/// The pid in a `hello from PID` answer.
async fn hello_id(response: hyper::Response<hyper::body::Incoming>) -> Result<String, String> {
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("reading the body: {e:?}"))?;
    let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    match body.trim_end().strip_prefix("hello from ") {
        Some(pid) if status.is_success() => Ok(pid.to_string()),
        _ => Err(format!("unexpected answer {status}: {body:?}")),
    }
}

/// The health service's `Check` for the whole server. Any answer from the server counts:
/// `SERVING` (id `grpc`), and from a server that drains, `NOT_SERVING` or `NOT_FOUND` once it
/// removed its status (id `grpc-draining`; the tonic example does both when told to drain, to
/// end its `Watch` streams). Failures are the calls no server answered: cancelled, unavailable,
/// cut.
async fn check(channel: Channel) -> Result<String, String> {
    let request = HealthCheckRequest { service: String::new() };
    match HealthClient::new(channel).check(request).await {
        Ok(response) if response.get_ref().status == 1 => Ok("grpc".to_string()),
        Ok(_) => Ok("grpc-draining".to_string()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok("grpc-draining".to_string()),
        Err(status) => Err(format!("{status:?}")),
    }
}
