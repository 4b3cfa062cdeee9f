//! Property tests of the wire format: the version prefix, frames and their messages, and frames
//! carried over a real socket pair together with descriptor messages.
//!
//! Expected values come from small models written here from `PROTOCOL.md`, not from the code
//! under test.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::channel::Channel;
use super::frame::{self, MAX_LIST_FRAME, MAX_SMALL_FRAME};
use super::messages::{ReadyReply, ReadyRequest, WireEntry, MAX_PAYLOAD, READY_V1};
use super::version;
use crate::error::Error;

/// The four characters of the version prefix, by 2-bit value.
const DIGITS: [u8; 4] = [b' ', b'\t', b'\r', b'\n'];

/// Cases per property: enough to cover the shapes, few enough for the module to run in seconds.
const CASES: u32 = 256;
/// The socket properties cost a thread and a socket pair per case.
const SOCKET_CASES: u32 = 128;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn digit_value(byte: u8) -> Option<u64> {
    DIGITS.iter().position(|&d| d == byte).map(|v| v as u64)
}

/// The spec's prefix of `v`: its base-4 digits, least significant first, padded with zeros to
/// whole nibbles (two digits each); nothing for 0.
fn model_prefix(v: u32) -> Vec<u8> {
    let mut digits = Vec::new();
    let mut rest = u64::from(v);
    while rest != 0 {
        digits.push(DIGITS[(rest % 4) as usize]);
        rest /= 4;
    }
    if digits.len() % 2 == 1 {
        digits.push(DIGITS[0]);
    }
    digits
}

/// Two characters for each nibble position up to the most significant non-zero nibble.
fn expected_prefix_len(v: u32) -> usize {
    let nibbles = (0..8).rev().find(|&i| (v >> (4 * i)) & 0xf != 0).map_or(0, |i| i + 1);
    2 * nibbles
}

/// The spec's decoding of a run of prefix characters, in 64 bits so that nothing wraps.
fn model_fold(run: &[u8]) -> u64 {
    run.iter().rev().fold(0u64, |v, &b| (v << 2) + digit_value(b).expect("a prefix character"))
}

fn prefix_char() -> impl Strategy<Value = u8> {
    prop::sample::select(DIGITS.to_vec())
}

/// Text after a version prefix: empty, or anything that does not start with a prefix character.
/// Mostly JSON-looking, sometimes arbitrary bytes.
fn after_prefix() -> impl Strategy<Value = Vec<u8>> {
    let json_ish = "[\\[{\"0-9a-z-][ -~\t\r\n]{0,40}".prop_map(String::into_bytes);
    let bytes = (
        any::<u8>().prop_filter("not a prefix character", |b| digit_value(*b).is_none()),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(first, mut rest)| {
            rest.insert(0, first);
            rest
        });
    prop_oneof![Just(Vec::new()), json_ish, bytes]
}

/// Any unicode, control characters, quotes and backslashes included.
fn wire_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter)
}

fn wire_entry() -> impl Strategy<Value = WireEntry> {
    (wire_string(), wire_string(), wire_string(), wire_string())
        .prop_map(|(kind, id, network, addr)| WireEntry { kind, id, network, addr })
}

fn wire_list() -> impl Strategy<Value = Vec<WireEntry>> {
    prop::collection::vec(wire_entry(), 0..50)
}

/// Versions with a bias towards the boundaries of the prefix's length.
fn any_version() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1u32),
        Just(u32::MAX),
        (0u32..8).prop_map(|i| 1u32 << (4 * i)),
        (1u32..=8).prop_map(|i| ((1u64 << (4 * i)) - 1) as u32),
        any::<u32>(),
    ]
}

fn is_protocol_error<T>(result: &crate::error::Result<T>) -> bool {
    matches!(result.as_ref().map_err(|e| e.kind()), Err(crate::ErrorKind::Protocol))
}

/// A connected pair of channels with a generous deadline, so that a bug fails the test instead
/// of hanging it.
fn channel_pair() -> (Channel<'static>, Channel<'static>) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let deadline = Some(Instant::now() + Duration::from_secs(20));
    (
        Channel::new(a, deadline, None, "the writing side").expect("channel"),
        Channel::new(b, deadline, None, "the reading side").expect("channel"),
    )
}

/// What the reading side of a session got, in order.
struct Session {
    version: u32,
    list: Vec<WireEntry>,
    /// Each descriptor message's payload and the (device, inode) of the file it carried.
    descriptors: Vec<(Vec<u8>, (u64, u64))>,
    ready_byte: u8,
    request_prefix: u32,
    requested: u32,
    trailer: Vec<u8>,
}

/// Reads a list frame, its descriptors, a ready byte and request, and `trailer_len` more bytes.
fn read_session(reader: &Channel<'_>, trailer_len: usize) -> crate::error::Result<Session> {
    let (version, list): (u32, Vec<WireEntry>) = frame::read_list(reader)?;
    let mut descriptors = Vec::with_capacity(list.len());
    let mut buf = vec![0u8; MAX_PAYLOAD];
    for _ in &list {
        let (n, fd) = reader.recv_fd(&mut buf)?;
        let meta = File::from(fd).metadata().map_err(|e| Error::io("fstat of a received descriptor", e))?;
        descriptors.push((buf[..n].to_vec(), (meta.dev(), meta.ino())));
    }
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte)?;
    let (request_prefix, request): (u32, ReadyRequest) = frame::read_small(reader)?;
    let mut trailer = vec![0u8; trailer_len];
    reader.read_exact(&mut trailer)?;
    Ok(Session {
        version,
        list,
        descriptors,
        ready_byte: byte[0],
        request_prefix,
        requested: request.version,
        trailer,
    })
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn version_prefix_round_trips(v in any_version(), rest in after_prefix()) {
        let mut body = Vec::new();
        version::encode(v, &mut body);
        let prefix_len = body.len();
        body.extend_from_slice(&rest);
        let (decoded, json) = version::decode(&body).unwrap();
        prop_assert_eq!(decoded, v);
        prop_assert_eq!(json, &rest[..]);
        prop_assert_eq!(prefix_len, expected_prefix_len(v));
    }

    #[test]
    fn version_prefix_matches_the_spec(v in any_version()) {
        let mut out = vec![b'{'];
        version::encode(v, &mut out);
        // `encode` appends: what was there stays.
        prop_assert_eq!(out[0], b'{');
        prop_assert_eq!(&out[1..], &model_prefix(v)[..]);
        prop_assert_eq!(out.len() - 1, expected_prefix_len(v));
        prop_assert!(out.len() - 1 <= 16);
    }

    #[test]
    fn prefix_runs_up_to_16_decode_to_their_fold(
        run in prop::collection::vec(prefix_char(), 0..=16),
        rest in after_prefix(),
    ) {
        let body = [&run[..], &rest[..]].concat();
        let (v, json) = version::decode(&body).unwrap();
        let expected = model_fold(&run);
        prop_assert!(expected <= u64::from(u32::MAX));
        prop_assert_eq!(u64::from(v), expected);
        prop_assert_eq!(json, &rest[..]);
        // Re-encoding gives the canonical prefix: the same digits, up to trailing zeros (a run
        // may be of odd length or end in zero nibbles).
        let mut canonical = Vec::new();
        version::encode(v, &mut canonical);
        let significant = |digits: &[u8]| digits.len() - digits.iter().rev().take_while(|&&b| b == b' ').count();
        prop_assert_eq!(&canonical[..significant(&canonical)], &run[..significant(&run)]);
    }

    #[test]
    fn prefix_runs_over_16_are_errors_not_wrapped_numbers(
        run in prop::collection::vec(prefix_char(), 17..200),
        rest in after_prefix(),
    ) {
        let body = [&run[..], &rest[..]].concat();
        prop_assert!(is_protocol_error(&version::decode(&body)));
        // A frame with such a prefix is refused too, whatever JSON follows.
        prop_assert!(is_protocol_error(&frame::decode::<serde_json::Value>(&body)));
    }

    #[test]
    fn version_decode_of_any_bytes(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let run = body.iter().take_while(|&&b| digit_value(b).is_some()).count();
        match version::decode(&body) {
            Ok((v, json)) => {
                prop_assert!(run <= 16);
                prop_assert_eq!(u64::from(v), model_fold(&body[..run]));
                prop_assert_eq!(json, &body[run..]);
            }
            Err(e) => {
                prop_assert!(run > 16, "refused a run of {} characters: {}", run, e);
                prop_assert!(matches!(e.kind(), crate::ErrorKind::Protocol));
            }
        }
    }

    #[test]
    fn list_frames_round_trip(v in any_version(), list in wire_list()) {
        let bytes = frame::encode(v, &list).unwrap();
        prop_assert!(bytes.len() >= 4 + 3);
        let (header, body) = bytes.split_at(4);
        let header: [u8; 4] = header.try_into().unwrap();
        prop_assert_eq!(i32::from_be_bytes(header) as i64, body.len() as i64);
        prop_assert_eq!(frame::body_len(header, MAX_LIST_FRAME).unwrap(), body.len());
        prop_assert_eq!(body.last(), Some(&b'\n'));
        // The prefix, then a single line of JSON: the newline is the terminator only.
        let prefix = model_prefix(v);
        prop_assert!(body.starts_with(&prefix));
        prop_assert_eq!(body[prefix.len()], b'[');
        prop_assert!(!body[prefix.len()..body.len() - 1].contains(&b'\n'));
        let (version, back): (u32, Vec<WireEntry>) = frame::decode(body).unwrap();
        prop_assert_eq!(version, v);
        prop_assert_eq!(back, list);
    }

    #[test]
    fn handshake_frames_round_trip(v in any_version(), requested in any::<u32>(), msg in wire_string()) {
        let bytes = frame::encode(v, &ReadyRequest { version: requested }).unwrap();
        let len = frame::body_len(bytes[..4].try_into().unwrap(), MAX_SMALL_FRAME).unwrap();
        prop_assert_eq!(len, bytes.len() - 4);
        let (version, request): (u32, ReadyRequest) = frame::decode_object(&bytes[4..]).unwrap();
        prop_assert_eq!((version, request.version), (v, requested));

        let bytes = frame::encode(v, &ReadyReply { msg: msg.clone() }).unwrap();
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        let (version, reply): (u32, ReadyReply) = frame::decode_object(&bytes[4..]).unwrap();
        prop_assert_eq!((version, reply.msg), (v, msg));
    }

    #[test]
    fn body_len_accepts_exactly_0_to_max(len in any::<i32>(), max in 0usize..=(i32::MAX as usize) + 2) {
        let result = frame::body_len(len.to_be_bytes(), max);
        if len >= 0 && len as usize <= max {
            prop_assert_eq!(result.unwrap(), len as usize);
        } else {
            prop_assert!(is_protocol_error(&result));
        }
    }

    #[test]
    fn body_len_boundaries(len in 0i32..=i32::MAX) {
        let header = len.to_be_bytes();
        prop_assert_eq!(frame::body_len(header, len as usize).unwrap(), len as usize);
        prop_assert_eq!(frame::body_len(header, usize::MAX).unwrap(), len as usize);
        if len > 0 {
            prop_assert!(is_protocol_error(&frame::body_len(header, len as usize - 1)));
        }
    }

    #[test]
    fn body_len_rejects_negatives(len in i32::MIN..0, max in any::<usize>()) {
        prop_assert!(is_protocol_error(&frame::body_len(len.to_be_bytes(), max)));
        prop_assert!(is_protocol_error(&frame::body_len(len.to_be_bytes(), usize::MAX)));
    }

    #[test]
    fn frame_decode_of_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let list = frame::decode::<Vec<WireEntry>>(&body);
        prop_assert!(list.is_ok() || is_protocol_error(&list));
        let request = frame::decode_object::<ReadyRequest>(&body);
        prop_assert!(request.is_ok() || is_protocol_error(&request));
        let reply = frame::decode_object::<ReadyReply>(&body);
        prop_assert!(reply.is_ok() || is_protocol_error(&reply));
    }

    #[test]
    fn frame_decode_of_damaged_frames(
        v in any_version(),
        list in prop::collection::vec(wire_entry(), 0..5),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        // Valid frames with a few bytes overwritten and the end cut off reach deeper into the
        // parser than random bytes do.
        let mut body = frame::encode(v, &list).unwrap().split_off(4);
        for (at, byte) in damage {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let decoded = frame::decode::<Vec<WireEntry>>(&body);
        prop_assert!(decoded.is_ok() || is_protocol_error(&decoded));
        let object = frame::decode_object::<ReadyRequest>(&body);
        prop_assert!(object.is_err(), "a list is not a ready request");
    }
}

proptest! {
    #![proptest_config(config(SOCKET_CASES))]

    /// A session's bytes over a real socket pair: the list frame, one descriptor message per
    /// entry, the ready byte and request, and bytes after them; the reader reads exactly each
    /// frame and no further, so nothing is lost or reordered.
    #[test]
    fn frames_and_descriptors_cross_a_socket_intact(
        v in any_version(),
        list in wire_list(),
        requested in any::<u32>(),
        trailer in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let file = File::open("/dev/null").unwrap();
        let original = file.metadata().unwrap();
        let (writer, reader) = channel_pair();
        let (sent, received) = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                frame::write(&writer, v, &list)?;
                for entry in &list {
                    writer.send_fd(&entry.payload(), file.as_fd())?;
                }
                writer.write_all(&[READY_V1])?;
                frame::write(&writer, 0, &ReadyRequest { version: requested })?;
                writer.write_all(&trailer)
            });
            let received = read_session(&reader, trailer.len());
            (sender.join().expect("writer thread"), received)
        });
        sent.unwrap();
        let session = received.unwrap();
        prop_assert_eq!(session.version, v);
        prop_assert_eq!(&session.list, &list);
        prop_assert_eq!(session.descriptors.len(), list.len());
        for ((payload, identity), entry) in session.descriptors.iter().zip(&list) {
            prop_assert_eq!(payload, &entry.payload());
            prop_assert_eq!(*identity, (original.dev(), original.ino()));
        }
        prop_assert_eq!(session.ready_byte, READY_V1);
        prop_assert_eq!(session.request_prefix, 0);
        prop_assert_eq!(session.requested, requested);
        prop_assert_eq!(session.trailer, trailer);
    }

    /// The same frame written in arbitrary pieces (a peer may send it a byte at a time) reads
    /// back the same.
    #[test]
    fn frames_written_in_pieces_read_back_identically(
        v in any_version(),
        list in prop::collection::vec(wire_entry(), 0..10),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let bytes = frame::encode(v, &list).unwrap();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let (writer, reader) = channel_pair();
        let result = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                for piece in cuts.windows(2) {
                    writer.write_all(&bytes[piece[0]..piece[1]])?;
                    std::thread::yield_now();
                }
                Ok::<_, Error>(())
            });
            let result: crate::error::Result<(u32, Vec<WireEntry>)> = frame::read_list(&reader);
            (sender.join().expect("writer thread"), result)
        });
        result.0.unwrap();
        let (version, back) = result.1.unwrap();
        prop_assert_eq!(version, v);
        prop_assert_eq!(back, list);
    }

    /// A header announcing more than the limit (or a negative length) is refused as soon as it
    /// is read, without waiting for a body that will never come.
    #[test]
    fn oversized_headers_are_refused_before_reading_the_body(
        len in prop_oneof![(MAX_SMALL_FRAME as i32 + 1)..=i32::MAX, i32::MIN..0],
    ) {
        let (writer, reader) = channel_pair();
        writer.write_all(&len.to_be_bytes()).unwrap();
        let started = Instant::now();
        let result: crate::error::Result<(u32, ReadyRequest)> = frame::read_small(&reader);
        prop_assert!(is_protocol_error(&result));
        prop_assert!(started.elapsed() < Duration::from_secs(5));
        drop(writer);
    }
}
