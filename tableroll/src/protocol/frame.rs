//! Frames: a 4-byte big-endian signed length, then that many bytes of body (a version prefix
//! and a JSON text ending in `\n`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::channel::Channel;
use super::version;
use crate::error::{Error, Result};

/// The largest descriptor list we accept: 64 MiB, room for about half a million entries.
pub(crate) const MAX_LIST_FRAME: usize = 64 << 20;
/// The largest handshake frame (`{"version":1}`, `{"msg":"stepping down"}`) we accept.
pub(crate) const MAX_SMALL_FRAME: usize = 4096;

/// Encodes `value` as one frame with `version`'s prefix.
pub(crate) fn encode<T: Serialize>(version: u32, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 4];
    version::encode(version, &mut out);
    serde_json::to_writer(&mut out, value).map_err(|e| Error::protocol(format!("encoding a frame: {e}")))?;
    out.push(b'\n');
    let len = i32::try_from(out.len() - 4).map_err(|_| Error::protocol("frame larger than 2 GiB"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Checks a frame header and returns the body length, refusing anything over `max`.
pub(crate) fn body_len(header: [u8; 4], max: usize) -> Result<usize> {
    let len = i32::from_be_bytes(header);
    let len = usize::try_from(len).map_err(|_| Error::protocol(format!("negative frame length {len}")))?;
    if len > max {
        return Err(Error::protocol(format!("frame of {len} bytes exceeds the limit of {max}")));
    }
    Ok(len)
}

/// Parses a frame body: the version prefix, then JSON of type `T`.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<(u32, T)> {
    let (version, json) = version::decode(body)?;
    let value = serde_json::from_slice(json).map_err(|e| Error::protocol(format!("malformed frame: {e}")))?;
    Ok((version, value))
}

/// Like [`decode`], for a frame that must be one JSON object (serde would also accept a
/// struct written as an array, which no writer of this protocol sends).
pub(crate) fn decode_object<T: DeserializeOwned>(body: &[u8]) -> Result<(u32, T)> {
    let (version, value): (u32, serde_json::Value) = decode(body)?;
    if !value.is_object() {
        return Err(Error::protocol(format!("expected a JSON object, got {value}")));
    }
    let value =
        serde_json::from_value(value).map_err(|e| Error::protocol(format!("malformed frame: {e}")))?;
    Ok((version, value))
}

/// Reads the descriptor list frame.
pub(crate) fn read_list<T: DeserializeOwned>(ch: &Channel<'_>) -> Result<(u32, T)> {
    decode(&read_body(ch, MAX_LIST_FRAME)?)
}

/// Reads a small handshake frame holding one JSON object.
pub(crate) fn read_small<T: DeserializeOwned>(ch: &Channel<'_>) -> Result<(u32, T)> {
    decode_object(&read_body(ch, MAX_SMALL_FRAME)?)
}

/// Reads one frame body of at most `max` bytes.
///
/// The body buffer grows as bytes arrive, so a peer announcing a large frame and then sending
/// nothing makes us allocate nothing.
fn read_body(ch: &Channel<'_>, max: usize) -> Result<Vec<u8>> {
    let mut header = [0u8; 4];
    ch.read_exact(&mut header)?;
    let len = body_len(header, max)?;
    let mut body = Vec::new();
    while body.len() < len {
        let start = body.len();
        let chunk = (len - start).min(64 << 10);
        body.resize(start + chunk, 0);
        ch.read_exact(&mut body[start..])?;
    }
    Ok(body)
}

pub(crate) fn write<T: Serialize>(ch: &Channel<'_>, version: u32, value: &T) -> Result<()> {
    ch.write_all(&encode(version, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{ReadyReply, ReadyRequest, WireEntry};

    #[test]
    fn golden_bytes_of_go_owner_list() {
        let entries = vec![WireEntry {
            kind: "listener".into(),
            id: "web".into(),
            network: "tcp".into(),
            addr: "127.0.0.1:18090".into(),
        }];
        let bytes = encode(1, &entries).unwrap();
        let mut expected = vec![0, 0, 0, 0x4c, 0x09, 0x20];
        expected.extend_from_slice(
            br#"[{"kind":"listener","id":"web","network":"tcp","addr":"127.0.0.1:18090"}]"#,
        );
        expected.push(b'\n');
        assert_eq!(bytes, expected);
        let (v, back): (u32, Vec<WireEntry>) = decode(&bytes[4..]).unwrap();
        assert_eq!((v, back), (1, entries));
    }

    #[test]
    fn golden_bytes_of_ready_handshake() {
        let req = encode(0, &ReadyRequest { version: 1 }).unwrap();
        assert_eq!(req, [&[0u8, 0, 0, 0x0e][..], b"{\"version\":1}\n"].concat(),);
        let reply = encode(0, &ReadyReply::stepping_down()).unwrap();
        assert_eq!(reply, [&[0u8, 0, 0, 0x18][..], b"{\"msg\":\"stepping down\"}\n"].concat(),);
    }

    #[test]
    fn v0_frames_have_no_prefix() {
        let bytes = encode(0, &Vec::<WireEntry>::new()).unwrap();
        assert_eq!(bytes, [&[0u8, 0, 0, 3][..], b"[]\n"].concat());
        let (v, list): (u32, Vec<WireEntry>) = decode(&bytes[4..]).unwrap();
        assert_eq!((v, list.len()), (0, 0));
    }

    #[test]
    fn length_is_bounded_before_allocation() {
        assert_eq!(body_len(76i32.to_be_bytes(), MAX_SMALL_FRAME).unwrap(), 76);
        assert!(matches!(
            (body_len((-1i32).to_be_bytes(), MAX_LIST_FRAME)).map_err(|e| e.kind()),
            Err(crate::ErrorKind::Protocol)
        ));
        assert!(matches!(
            (body_len(i32::MIN.to_be_bytes(), MAX_LIST_FRAME)).map_err(|e| e.kind()),
            Err(crate::ErrorKind::Protocol)
        ));
        assert!(matches!(
            (body_len(i32::MAX.to_be_bytes(), MAX_LIST_FRAME)).map_err(|e| e.kind()),
            Err(crate::ErrorKind::Protocol)
        ));
        assert!(body_len((MAX_LIST_FRAME as i32).to_be_bytes(), MAX_LIST_FRAME).is_ok());
        assert!(body_len((MAX_LIST_FRAME as i32 + 1).to_be_bytes(), MAX_LIST_FRAME).is_err());
    }

    #[test]
    fn garbage_bodies_are_protocol_errors() {
        for body in [&b"not json"[..], b"{\"version\":", b"\t [{\"id\":1}]", b"\xff\xfe", b""] {
            assert!(
                matches!(
                    (decode::<Vec<WireEntry>>(body)).map_err(|e| e.kind()),
                    Err(crate::ErrorKind::Protocol)
                ),
                "{body:?}"
            );
        }
        assert!(decode_object::<ReadyRequest>(b"{\"version\":-1}\n").is_err());
        assert!(decode_object::<ReadyRequest>(b"{\"version\":4294967296}\n").is_err());
        assert!(decode_object::<ReadyRequest>(b"[1]\n").is_err());
        assert!(decode_object::<ReadyReply>(b"{}\n").is_err());
        assert_eq!(decode_object::<ReadyRequest>(b"{\"version\":7,\"x\":1}\n").unwrap().1.version, 7);
    }
}
