//! A minimal HTTP/1.1 client for the tests: one `GET` per connection, the whole response read
//! and its framing checked (with [`tableroll_load::http`]).

use std::io::{self, Read, Write};
use std::path::Path;

use tableroll_load::http::{self as wire, get_request};
use tableroll_load::{Conn, Target};

use crate::TIMEOUT;

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET target` over TCP to `addr`.
pub fn http_get(addr: &str, target: &str) -> io::Result<Response> {
    exchange(Conn::connect(&Target::Tcp(addr.to_string()), TIMEOUT)?, target)
}

/// `GET target` over the Unix socket at `path`.
pub fn http_get_unix(path: &Path, target: &str) -> io::Result<Response> {
    exchange(Conn::connect(&Target::Unix(path.to_path_buf()), TIMEOUT)?, target)
}

fn exchange(mut conn: Conn, target: &str) -> io::Result<Response> {
    conn.write_all(&get_request(target, false))?;
    read_response(conn)
}

/// Reads a whole `Connection: close` response, to the end of the stream, and checks its
/// framing.
pub fn read_response(mut stream: impl Read) -> io::Result<Response> {
    let mut buf = Vec::new();
    let (head, start) = wire::read_response(&mut stream, &mut buf)?;
    wire::read_to_close(&mut stream, &mut buf, start + head.content_length)?;
    Ok(Response { status: head.status, body: String::from_utf8_lossy(&buf[start..]).into_owned() })
}
