//! A minimal HTTP/1.1 client for the tests: one `GET` per connection, the whole response read
//! and its framing checked.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::TIMEOUT;

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET target` over TCP to `addr`.
pub fn http_get(addr: &str, target: &str) -> io::Result<Response> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    exchange(stream, target)
}

/// `GET target` over the Unix socket at `path`.
pub fn http_get_unix(path: &Path, target: &str) -> io::Result<Response> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    exchange(stream, target)
}

fn exchange(mut stream: impl Read + Write, target: &str) -> io::Result<Response> {
    write!(stream, "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    read_response(stream)
}

/// Reads a whole `Connection: close` response and checks its framing.
pub fn read_response(mut stream: impl Read) -> io::Result<Response> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let invalid = |what: &str| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {:?}", String::from_utf8_lossy(&raw)))
    };
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| invalid("no end of head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad status line"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid("no Content-Length"))?;
    if length != body.len() {
        return Err(invalid("Content-Length does not match the body"));
    }
    Ok(Response { status, body })
}
