//! One client's requests, one at a time, and how each ends: answered, or failed as one of six
//! kinds.
//!
//! A request starts when its client starts on it (connecting, if it needs a new connection),
//! and ends as exactly one of: answered, or failed as
//!
//! - `refused`: the connection was refused (or the Unix socket path was missing);
//! - `reset`: the connection was reset (`ECONNRESET`, `EPIPE`);
//! - `closed`: the server closed the connection before a whole response arrived;
//! - `timeout`: a read or write waited longer than the request timeout;
//! - `bad_response`: anything but `200 OK` with a body the caller accepts, or a malformed
//!   response;
//! - `other`: any other error (such as running out of local ports).
//!
//! With keep-alive, a connection that the server closed between two requests (a draining
//! server does) is replaced before the request is sent, without a failure. Only a request of
//! which not one byte was accepted is retried, and only once: after that, the client cannot
//! know whether the server saw it, so whatever goes wrong is a failure.
//!
//! A connection that carries no further request (the client or the server asked for it to
//! be closed) is read until the server closes it: once a request ended, the server has closed
//! its side of every connection the client no longer uses.

use std::io::{self, ErrorKind, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use crate::http::{get_request, read_response, read_to_close, ResponseError};
use crate::net::{Conn, Target};
use crate::sys;

/// The kinds of failure; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The connection was refused (nobody listens), or the Unix socket's path is missing.
    Refused,
    /// The connection was reset (or the pipe broke) after it was established.
    Reset,
    /// The server closed the connection before a whole response.
    Closed,
    /// A read or write waited longer than the request timeout.
    Timeout,
    /// Not `200 OK` with a body the caller accepts, or malformed.
    BadResponse,
    /// Anything else.
    Other,
}

/// A failed request: its kind, and what happened.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// What happened, for people.
    pub message: String,
}

impl Failure {
    fn io(stage: &str, e: &io::Error) -> Failure {
        Failure { kind: classify(stage, e), message: format!("{stage}: {e}") }
    }

    fn bad(message: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::BadResponse, message: message.into() }
    }
}

impl From<ResponseError> for Failure {
    fn from(e: ResponseError) -> Failure {
        match e {
            ResponseError::Io { stage, error } => Failure::io(stage, &error),
            ResponseError::Closed => Failure { kind: FailureKind::Closed, message: e.to_string() },
            ResponseError::Malformed(why) => Failure::bad(why),
        }
    }
}

/// The kind of failure an I/O error at `stage` (`"connecting"`, or another) is.
pub fn classify(stage: &str, e: &io::Error) -> FailureKind {
    match e.kind() {
        ErrorKind::ConnectionRefused => FailureKind::Refused,
        ErrorKind::NotFound if stage == "connecting" => FailureKind::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            FailureKind::Reset
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => FailureKind::Timeout,
        ErrorKind::UnexpectedEof => FailureKind::Closed,
        _ => FailureKind::Other,
    }
}

/// One client: `GET /` to one target, one request at a time, on a kept connection or a new
/// one each time.
#[derive(Debug)]
pub struct Client {
    target: Target,
    keep_alive: bool,
    timeout: Duration,
    request: Vec<u8>,
    conn: Option<Conn>,
    buf: Vec<u8>,
    reconnects: u64,
}

impl Client {
    /// A client of `target` that reuses its connection if `keep_alive`; `timeout` bounds each
    /// connect, read and write.
    pub fn new(target: Target, keep_alive: bool, timeout: Duration) -> Client {
        let request = get_request("/", keep_alive);
        Client {
            target,
            keep_alive,
            timeout,
            request,
            conn: None,
            buf: Vec::with_capacity(1024),
            reconnects: 0,
        }
    }

    /// How many kept connections were found closed and replaced so far (not failures).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Whether a connection is kept for the next request.
    pub fn has_connection(&self) -> bool {
        self.conn.is_some()
    }

    /// One request, from connecting (if needed) to the end of the response, whose body `check`
    /// turns into the answer (or refuses, as a bad response).
    ///
    /// # Errors
    ///
    /// How it failed; see the module docs.
    pub fn request<A>(&mut self, check: impl FnOnce(&[u8]) -> Result<A, String>) -> Result<A, Failure> {
        let (mut conn, reused) = self.connection()?;
        match send(&mut conn, &self.request) {
            Ok(()) => {}
            // Not one byte left: the server cannot have seen it, so it may go on a new one.
            Err((0, _)) if reused => {
                self.reconnects += 1;
                conn = self.connect()?;
                send(&mut conn, &self.request).map_err(|(_, e)| Failure::io("sending the request", &e))?;
            }
            Err((_, e)) => return Err(Failure::io("sending the request", &e)),
        }
        let (answer, keep) = self.receive(&mut conn, check)?;
        if keep {
            self.conn = Some(conn);
        }
        Ok(answer)
    }

    /// The kept connection if it is still open (and whether it is one), else a new one.
    fn connection(&mut self) -> Result<(Conn, bool), Failure> {
        match self.conn.take() {
            Some(conn) if !sys::has_input(conn.as_fd()) => Ok((conn, true)),
            Some(_closed) => {
                self.reconnects += 1;
                Ok((self.connect()?, false))
            }
            None => Ok((self.connect()?, false)),
        }
    }

    fn connect(&self) -> Result<Conn, Failure> {
        Conn::connect(&self.target, self.timeout).map_err(|e| Failure::io("connecting", &e))
    }

    /// Reads one response; returns the answer and whether the connection may carry another
    /// request.
    fn receive<A>(
        &mut self,
        conn: &mut Conn,
        check: impl FnOnce(&[u8]) -> Result<A, String>,
    ) -> Result<(A, bool), Failure> {
        let (head, start) = read_response(conn, &mut self.buf)?;
        let whole = start + head.content_length;
        let keep = self.keep_alive && !head.close;
        if !keep {
            read_to_close(conn, &mut self.buf, whole)?;
        }
        if head.status != 200 {
            return Err(Failure::bad(format!("status {}", head.status)));
        }
        if self.buf.len() > whole {
            return Err(Failure::bad("an unexpected response body"));
        }
        let answer = check(&self.buf[start..]).map_err(Failure::bad)?;
        Ok((answer, keep))
    }
}

/// Writes `request`; on failure, says how many bytes of it were accepted.
fn send(conn: &mut Conn, request: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut sent = 0;
    while sent < request.len() {
        match conn.write(&request[sent..]) {
            Ok(0) => return Err((sent, ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err((sent, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
