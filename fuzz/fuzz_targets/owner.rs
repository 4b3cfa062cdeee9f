//! An owner handing over one listener to a newcomer that sent arbitrary bytes and closed. The
//! owner must step down only on a well-formed ready handshake: the byte 0x2A (version 0), or
//! 0x42 followed by a frame `{"version":1}` (version 1).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const READY_V0: u8 = 0x2A;
const READY_V1: u8 = 0x42;
/// The largest ready request frame an owner accepts.
const MAX_SMALL_FRAME: usize = 4096;
/// The request a version 1 newcomer sends after `READY_V1`, as PROTOCOL.md shows it.
const CANONICAL_REQUEST: &[u8] = b"\x00\x00\x00\x0e{\"version\":1}\n";

/// Whether `data` starts with one frame whose body is a JSON object with `"version": 1`.
///
/// Lenient where the protocol leaves room: the body may carry a version prefix (JSON
/// whitespace that fits 32 bits), the object may hold other keys, and bytes after the frame do
/// not matter (the owner reads no further).
fn is_version_1_request(data: &[u8]) -> bool {
    let Some(header) = data.get(..4) else { return false };
    let len = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let Ok(len) = usize::try_from(len) else { return false };
    if len > MAX_SMALL_FRAME {
        return false;
    }
    let Some(body) = data.get(4..4 + len) else { return false };
    let prefix = body.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
    if prefix > 16 {
        return false;
    }
    match serde_json::from_slice::<Value>(&body[prefix..]) {
        Ok(Value::Object(fields)) => fields.get("version").and_then(Value::as_u64) == Some(1),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let stepped_down = tableroll::fuzzing::owner_hands_over(data);
    let handshake_ok = match data.first() {
        Some(&READY_V0) => true,
        Some(&READY_V1) => is_version_1_request(&data[1..]),
        _ => false,
    };
    if stepped_down {
        assert!(handshake_ok, "the owner stepped down after {data:?}");
    }
    // The two handshakes real newcomers send must always be accepted.
    let canonical = match data.first() {
        Some(&READY_V0) => true,
        Some(&READY_V1) => data[1..].starts_with(CANONICAL_REQUEST),
        _ => false,
    };
    if canonical {
        assert!(stepped_down, "the owner stayed after the handshake {data:?}");
    }
});
