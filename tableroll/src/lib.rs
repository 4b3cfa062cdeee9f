//! Zero-downtime upgrades for network services: hand listening sockets and other descriptors
//! from a running process to its independently started successor.
//!
//! The new version of a server is started next to the old one, as a separate process that
//! nobody forked (a second systemd template instance, a new container sharing a volume). The
//! two agree only on a coordination directory. The newcomer takes the owner's listening
//! sockets over a Unix socket, starts serving, says it is ready, and the old process is told to
//! drain. The listening socket never closes, so no connection attempt is refused during the
//! upgrade.
//!
//! This crate speaks the wire protocol of the Go library
//! [tableroll](https://github.com/ngrok/tableroll) (protocol version 1, and the version 0
//! ready byte): a Go tableroll process and a Rust one can hand over to each other in either
//! direction.
//!
//! # Example
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let upgrader = tableroll::Upgrader::builder("/run/myapp/tableroll")
//!         .upgrade_timeout(Duration::from_secs(30))
//!         .build()?;
//!     // The previous owner's listener if there is one, else a new one.
//!     let listener = upgrader.fds().listen_tcp("web", "127.0.0.1:8080")?;
//!     listener.set_nonblocking(true)?; // shared with the other process: see `Fds`
//!     upgrader.ready()?; // now the owner; the previous one drains
//!
//!     let done = upgrader.upgrade_complete();
//!     while !done.is_complete() {
//!         match listener.accept() {
//!             Ok((mut conn, _)) => {
//!                 conn.set_nonblocking(false)?;
//!                 let mut request = [0u8; 1024];
//!                 let _ = conn.read(&mut request)?;
//!                 conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n")?;
//!             }
//!             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
//!                 done.wait_timeout(Duration::from_millis(10));
//!             }
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//!     // A newer process took over: stop accepting, finish what is in flight, exit.
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! The directory holds the owner file `pid` (the current owner's id, also the `flock(2)` lock
//! file) and one upgrade socket `<id>.sock` per live process. A newcomer binds its socket,
//! takes the lock, connects to the owner's socket and receives the descriptor list and each
//! descriptor (`SCM_RIGHTS`, one per message). On [`Upgrader::ready`] it tells the owner it is
//! ready, the owner answers that it steps down, and the newcomer writes its id to the owner
//! file and releases the lock.
//!
//! That write is the commit point: the owner file alone says who owns the group. The old owner
//! keeps serving until the file names another live process, and steps down then, within a
//! millisecond of the write (it watches the file), whether the newcomer closed the session
//! before writing (as Go tableroll does) or after. A newcomer that crashes, hangs, fails to
//! write or misbehaves at any step leaves the owner serving, and upgradable. A process that
//! stepped down keeps its upgrade socket and its store while it drains (a *standby*): a
//! newcomer that finds the owner dead receives the descriptors from it, with the connections
//! queued in the listeners, and starts with fresh ones only when no process holds them. With
//! [`Builder::probation`], the previous owner also stays a live backup for a while and becomes
//! the owner again, its application never told to drain, if the new owner dies: a release that
//! crashes right after taking over is rolled back automatically. A group may mix Rust and Go
//! tableroll processes in both roles (with Go v1.x, see [`Builder::pid_as_id`]).
//!
//! The library needs no async runtime: the owner serves upgrade requests on one background
//! thread of its own, and [`UpgradeComplete`] can be waited on from a thread or awaited on any
//! executor. Nothing is logged unless the application installs a [`tracing`] subscriber.
//!
//! On tokio, [`UpgradeComplete`] is `Send + 'static` and goes wherever a future does. Not
//! straight to axum's `serve(..).with_graceful_shutdown(..)`, though: that graceful shutdown
//! (hyper-util's) also cancels the connections accepted but not read from yet, which during an
//! upgrade are clients whose request is on its way, so a request would be reset now and then at
//! each upgrade under load. With the `tokio` feature, `DrainingListener` wraps the listener and
//! takes the signal instead: it stops accepting, and its `drained()` future, for the graceful
//! shutdown, resolves once every connection it accepted was read from (or closed, or sent
//! nothing for 10 s). With the `axum` feature it is an `axum::serve::Listener`:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn serve(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! let upgrader = tableroll::Upgrader::new("/run/myapp/tableroll")?;
//! let tcp = upgrader.fds().listen_tcp_tokio("web", "127.0.0.1:8080")?;
//! upgrader.ready()?;
//! let listener = tableroll::DrainingListener::new(tcp, upgrader.upgrade_complete());
//! let drained = listener.drained();
//! axum::serve(listener, app).with_graceful_shutdown(drained).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! None is on by default; the library alone depends only on `libc` (for one `getsockopt`),
//! `rustix`, `serde`, `serde_json` and `tracing`.
//!
//! - `fault-injection`: the `fault` module, to make a process abort or pause at a named point
//!   of a handoff, for testing what the rest of the group does when a process dies there.
//! - `fuzzing`: entry points for the fuzz targets in `fuzz/` and the benchmarks; not a stable
//!   API.
//! - `systemd`: the `systemd` module. Under a `Type=notify` unit the
//!   upgrader reports `READY=1` and `MAINPID` when it becomes the owner and `STOPPING=1` when a
//!   newcomer took over, so a template unit's next instance turns active only once it serves.
//!   No new dependency.
//! - `tokio`: `Fds::listen_tcp_tokio`, `Fds::listen_unix_tokio` and `Fds::bind_udp_tokio` give
//!   tokio listeners and sockets straight from the store, switched to non-blocking mode (which
//!   the other process shares: see [`Fds`]) and registered with the current runtime.
//!   `DrainingListener` wraps a tokio TCP or Unix listener to drain it without resetting the
//!   connections accepted just before an upgrade completed; it is also a `Stream` of
//!   connections. Adds `tokio` with its `net`, `rt`, `sync` and `time` features, and
//!   `futures-core`.
//! - `http` (implies `tokio`): `ConnectionCloseLayer`, lame-duck keep-alive for tower and hyper
//!   services: once the listener drains, HTTP/1 responses say `Connection: close`. Adds `http`,
//!   `hyper` (no features), `tower-layer`, `tower-service` and `pin-project-lite`.
//! - `axum` (implies `http`): `DrainingListener` implements `axum::serve::Listener`. Adds
//!   `axum` 0.8 without its default features, with `tokio` and `http1`.
//! - `tonic` (implies `tokio`): `DrainingStream` implements tonic's `Connected`, so that
//!   `serve_with_incoming_shutdown` takes the listener. Adds `tonic` 0.14 with its `server`
//!   feature only.
//!
//! # Security
//!
//! Upgrade sockets are created mode 0600, and every connection's peer credentials are checked
//! against the [`PeerPolicy`] (same user or root by default) before anything is sent. Ids read
//! from the owner file that could leave the directory are refused; every length read from the
//! wire is bounded before anything is allocated.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod coordination;
mod descriptor;
mod error;
// For tests: kept out of the public documentation, like `fuzzing`.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
#[allow(dead_code, unreachable_pub)]
mod fault;
mod fds;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod id;
pub mod inspect;
mod journal;
mod peer_policy;
mod probation;
mod protocol;
mod server;
mod signal;
mod state;
mod sys;
#[cfg(feature = "systemd")]
#[cfg_attr(docsrs, doc(cfg(feature = "systemd")))]
pub mod systemd;
#[cfg(not(feature = "systemd"))]
#[allow(dead_code, unreachable_pub)]
mod systemd;
#[cfg(feature = "tokio")]
mod tokio;
mod upgrader;

#[cfg(feature = "http")]
pub use self::tokio::{ConnectionClose, ConnectionCloseFuture, ConnectionCloseLayer};
#[cfg(feature = "tokio")]
pub use self::tokio::{Drained, DrainingListener, DrainingStream, TokioListener};
pub use descriptor::{Descriptor, Kind, Shareable};
pub use error::{Error, ErrorKind, Result};
pub use fds::Fds;
pub use peer_policy::PeerPolicy;
pub use probation::Rollback;
pub use signal::UpgradeComplete;
pub use upgrader::{Builder, Upgrader};

#[cfg(test)]
mod fds_tests;
#[cfg(test)]
mod upgrader_tests;
