//! tableroll's closed-loop HTTP load and child-process core, one copy for the whole workspace:
//! the CLI's `drill` runs the load against its demo server and its generations as [`Child`]ren,
//! and the test kit both against the test servers (not published).
//!
//! - [`http`]: just enough HTTP/1.1, both sides: a request writer, a head reader, a response
//!   parser and writer;
//! - [`net`]: TCP or Unix behind one type each for targets, listeners and connections;
//! - [`client`]: one client's requests, each ending as an answer or a [`Failure`] of one of
//!   six [`FailureKind`]s;
//! - [`load`]: the closed-loop driver, client threads that hand every finished request
//!   ([`Outcome`]) to a [`Recorder`] of the caller's;
//! - [`child`]: a child process with its stdout lines handed to a callback from a thread, its
//!   stderr kept (whole or a tail) and waited on, and kill-by-pid on drop; it never panics,
//!   so the drill uses it as it is and the test kit's harness adds the test diagnostics;
//! - [`now_ns`], the clock the outcomes are stamped with, and [`raise_nofile_limit`].

#![deny(missing_docs)]

pub mod child;
pub mod client;
pub mod http;
pub mod load;
pub mod net;
mod sys;

pub use child::Child;
pub use client::{Client, Failure, FailureKind};
pub use load::{Load, LoadConfig, Outcome, Recorder};
pub use net::{Conn, Listener, Target};
pub use sys::{now_ns, raise_nofile_limit};
