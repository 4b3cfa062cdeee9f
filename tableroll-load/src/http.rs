//! Just enough HTTP/1.1 for load and tests: `GET` requests without a body, and responses with
//! a `Content-Length`. Both sides use it: servers (the drill's demo server, the test kit's)
//! read requests and write responses, clients write requests and read responses.

use std::fmt;
use std::io::{self, Read, Write};

/// The largest request or response head either side reads.
pub const MAX_HEAD: usize = 8 * 1024;

/// A `GET` request for `path`, without a body; unless `keep_alive`, it asks the server to
/// close the connection after answering.
pub fn get_request(path: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "" } else { "Connection: close\r\n" };
    format!("GET {path} HTTP/1.1\r\nHost: tableroll\r\n{connection}\r\n").into_bytes()
}

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

impl From<HeadError> for io::Error {
    fn from(e: HeadError) -> io::Error {
        match e {
            HeadError::Io(e) => e,
            HeadError::Eof { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-head"),
            HeadError::TooLarge => io::Error::new(io::ErrorKind::InvalidData, "head too long"),
        }
    }
}

/// Reads from `conn` into `buf` until `buf` holds a whole head (ended by an empty line);
/// returns the head's length. Bytes after the head stay in `buf`.
pub fn read_head<R: Read + ?Sized>(conn: &mut R, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
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

/// Why no whole response was read.
#[derive(Debug)]
pub enum ResponseError {
    /// A read failed; `stage` says which part was being read.
    Io {
        /// `"reading the response"` (its head), or `"reading the response body"`.
        stage: &'static str,
        /// What failed.
        error: io::Error,
    },
    /// The server closed the connection before sending a byte.
    Closed,
    /// Not a response, or not a whole one: why, for people.
    Malformed(String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Io { stage, error } => write!(f, "{stage}: {error}"),
            ResponseError::Closed => f.write_str("closed without a response"),
            ResponseError::Malformed(why) => f.write_str(why),
        }
    }
}

impl From<ResponseError> for io::Error {
    fn from(e: ResponseError) -> io::Error {
        match e {
            ResponseError::Io { error, .. } => error,
            ResponseError::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()),
            ResponseError::Malformed(why) => io::Error::new(io::ErrorKind::InvalidData, why),
        }
    }
}

/// Reads one response from `conn` into `buf` (cleared first): its head, parsed, and its body,
/// which starts at the returned offset and is `content_length` bytes long. Bytes after the body
/// may follow in `buf`.
///
/// # Errors
///
/// See [`ResponseError`].
pub fn read_response(
    conn: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(ResponseHead, usize), ResponseError> {
    buf.clear();
    let end = read_head(conn, buf).map_err(|e| match e {
        HeadError::Io(error) => ResponseError::Io { stage: "reading the response", error },
        HeadError::Eof { partial: false } => ResponseError::Closed,
        HeadError::Eof { partial: true } => {
            ResponseError::Malformed("closed in the middle of the response head".into())
        }
        HeadError::TooLarge => ResponseError::Malformed("a response head too large".into()),
    })?;
    let head = parse_response_head(&buf[..end]).map_err(ResponseError::Malformed)?;
    let whole = end + head.content_length;
    let mut chunk = [0u8; 1024];
    while buf.len() < whole {
        match conn.read(&mut chunk) {
            Ok(0) => {
                return Err(ResponseError::Malformed("closed in the middle of the response body".into()))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ResponseError::Io { stage: "reading the response body", error }),
        }
    }
    Ok((head, end))
}

/// Reads what `conn` sends until the server closes it, after a response that ends at `whole`
/// in `buf`: then the server has closed its side of the connection.
///
/// # Errors
///
/// A read failed, or more bytes came after the response.
pub fn read_to_close(conn: &mut impl Read, buf: &mut Vec<u8>, whole: usize) -> Result<(), ResponseError> {
    let mut chunk = [0u8; 1024];
    while buf.len() <= whole {
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ResponseError::Io { stage: "reading the response body", error }),
        }
    }
    Err(ResponseError::Malformed("an unexpected response body".into()))
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
        let end = read_head(&mut &get_request("/", false)[..], &mut buf).unwrap();
        assert!(request_wants_close(&buf[..end]));
        assert!(!request_wants_close(&get_request("/x", true)));
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
    fn a_whole_response_is_read_to_the_close() {
        let mut wire = Vec::new();
        write_response(&mut wire, "200 OK", "hello\n", true).unwrap();
        let mut buf = Vec::new();
        let (head, start) = read_response(&mut &wire[..], &mut buf).unwrap();
        assert_eq!(&buf[start..start + head.content_length], b"hello\n");
        read_to_close(&mut &wire[buf.len()..], &mut buf, start + head.content_length).unwrap();
        wire.extend_from_slice(b"more");
        let err = read_to_close(&mut &wire[buf.len()..], &mut buf, start + head.content_length);
        assert!(matches!(err, Err(ResponseError::Malformed(_))), "{err:?}");
        let short = &wire[..wire.len() - 6];
        let err = read_response(&mut &short[..], &mut buf).unwrap_err();
        assert_eq!(err.to_string(), "closed in the middle of the response body");
        assert!(matches!(read_response(&mut &b""[..], &mut buf), Err(ResponseError::Closed)));
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
