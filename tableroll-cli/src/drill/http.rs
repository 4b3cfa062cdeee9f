//! Just enough HTTP/1.1 for the drill: `GET /` requests without a body, and responses with a
//! `Content-Length`. Both sides use it: the demo server reads requests and writes responses,
//! the load generator writes requests and reads responses.

use std::io::{self, Read, Write};

/// The largest request or response head either side reads.
pub const MAX_HEAD: usize = 8 * 1024;

/// A request that asks the server to keep the connection open.
pub const REQUEST_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: drill\r\n\r\n";
/// A request that asks the server to close the connection after answering.
pub const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: drill\r\nConnection: close\r\n\r\n";

/// Why no whole head was read.
#[derive(Debug)]
pub enum HeadError {
    /// The read failed.
    Io(io::Error),
    /// The peer closed the connection; `partial` if some bytes of a head had arrived.
    Eof {
        /// Whether some bytes arrived first.
        partial: bool,
    },
    /// No end of head within [`MAX_HEAD`] bytes.
    TooLarge,
}

/// Reads from `conn` into `buf` until `buf` holds a whole head (ended by an empty line);
/// returns the head's length. Bytes after the head stay in `buf`.
pub fn read_head(conn: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_head_end(buf) {
            return Ok(end);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Eof { partial: !buf.is_empty() }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The header `name`'s value in `head`, if present (names compared without case).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Whether a request head asks for the connection to be closed after the response.
pub fn request_wants_close(head: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head);
    head.lines().next().is_some_and(|line| line.ends_with("HTTP/1.0"))
        || header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Writes a response with `body`, announcing whether the connection closes after it.
pub fn write_response(conn: &mut impl Write, status: &str, body: &str, close: bool) -> io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes())
}

/// A response head, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The body's length.
    pub content_length: usize,
    /// Whether the server closes the connection after this response.
    pub close: bool,
}

/// Parses a response head (as [`read_head`] delimits it).
pub fn parse_response_head(head: &[u8]) -> Result<ResponseHead, String> {
    let head = std::str::from_utf8(head).map_err(|_| "a response head that is not UTF-8".to_string())?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("a malformed status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("a malformed status line {status_line:?}"));
    }
    let status = code.parse().map_err(|_| format!("a malformed status line {status_line:?}"))?;
    let content_length = header(head, "content-length")
        .ok_or("a response without Content-Length")?
        .parse()
        .map_err(|_| "a malformed Content-Length".to_string())?;
    let close =
        version == "HTTP/1.0" || header(head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Ok(ResponseHead { status, content_length, close })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_written_is_a_response_read() {
        let mut wire = Vec::new();
        write_response(&mut wire, "200 OK", "generation 3\n", false).unwrap();
        wire.extend_from_slice(b"next");
        let mut buf = Vec::new();
        let end = read_head(&mut &wire[..], &mut buf).unwrap();
        let head = parse_response_head(&buf[..end]).unwrap();
        assert_eq!(head, ResponseHead { status: 200, content_length: 13, close: false });
        assert_eq!(&buf[end..end + 13], b"generation 3\n");
    }

    #[test]
    fn requests_say_whether_they_want_the_connection_closed() {
        let mut buf = Vec::new();
        let end = read_head(&mut &REQUEST_CLOSE[..], &mut buf).unwrap();
        assert!(request_wants_close(&buf[..end]));
        assert!(!request_wants_close(REQUEST_KEEP_ALIVE));
        assert!(request_wants_close(b"GET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn short_and_endless_heads_are_told_apart() {
        let mut buf = Vec::new();
        assert!(matches!(read_head(&mut &b""[..], &mut buf), Err(HeadError::Eof { partial: false })));
        assert!(matches!(
            read_head(&mut &b"HTTP/1.1 2"[..], &mut buf),
            Err(HeadError::Eof { partial: true })
        ));
        let endless = vec![b'a'; MAX_HEAD * 2];
        assert!(matches!(read_head(&mut &endless[..], &mut Vec::new()), Err(HeadError::TooLarge)));
    }

    #[test]
    fn malformed_responses_are_refused() {
        for bad in [&b"garbage\r\n\r\n"[..], b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"] {
            assert!(parse_response_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let closing =
            parse_response_head(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: Close\r\n\r\n");
        assert_eq!(closing, Ok(ResponseHead { status: 500, content_length: 0, close: true }));
    }
}
