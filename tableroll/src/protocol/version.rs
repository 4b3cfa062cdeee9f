//! The version prefix: a number written as JSON-insignificant whitespace before a frame's JSON.
//!
//! Two characters per 4-bit nibble, least significant nibble first; within a nibble the low two
//! bits first. Each 2-bit value 0..=3 is one of `' '`, `'\t'`, `'\r'`, `'\n'`. Version 0 is the
//! empty prefix, version 1 is `"\t "`.

use crate::error::{Error, Result};

const DIGITS: [u8; 4] = [b' ', b'\t', b'\r', b'\n'];

/// The longest prefix that fits 32 bits: 8 nibbles of two characters each.
const MAX_PREFIX: usize = 16;

fn digit_value(byte: u8) -> Option<u32> {
    DIGITS.iter().position(|&d| d == byte).map(|v| v as u32)
}

/// Appends the prefix of `version` to `out`.
pub(crate) fn encode(version: u32, out: &mut Vec<u8>) {
    let mut v = version;
    while v != 0 {
        out.push(DIGITS[(v & 3) as usize]);
        out.push(DIGITS[((v >> 2) & 3) as usize]);
        v >>= 4;
    }
}

/// Splits `body` into its version and the JSON text after the prefix.
///
/// # Errors
///
/// A prefix longer than 16 characters does not fit 32 bits: a protocol error.
pub(crate) fn decode(body: &[u8]) -> Result<(u32, &[u8])> {
    let len = body.iter().take_while(|&&b| digit_value(b).is_some()).count();
    if len > MAX_PREFIX {
        return Err(Error::protocol(format!("version prefix of {len} characters does not fit 32 bits")));
    }
    let version = body[..len].iter().rev().fold(0u32, |v, &b| (v << 2) + digit_value(b).unwrap_or(0));
    Ok((version, &body[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(v: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn golden_prefixes() {
        assert_eq!(prefix(0), b"");
        assert_eq!(prefix(1), b"\t ");
        assert_eq!(prefix(2), b"\r ");
        assert_eq!(prefix(3), b"\n ");
        assert_eq!(prefix(4), b" \t");
        assert_eq!(prefix(16), b"  \t ");
        assert_eq!(prefix(u32::MAX).len(), 16);
    }

    #[test]
    fn decodes_go_list_frame_body() {
        let body = b"\t [{\"kind\":\"listener\"}]\n";
        let (v, rest) = decode(body).unwrap();
        assert_eq!(v, 1);
        assert_eq!(rest, b"[{\"kind\":\"listener\"}]\n");
        let (v, rest) = decode(b"{\"version\":1}\n").unwrap();
        assert_eq!((v, rest), (0, &b"{\"version\":1}\n"[..]));
    }

    #[test]
    fn round_trips_edge_values() {
        for v in [0, 1, 2, 15, 16, 255, 256, 0xdead_beef, u32::MAX - 1, u32::MAX] {
            let mut body = prefix(v);
            body.extend_from_slice(b"{}");
            assert_eq!(decode(&body).unwrap(), (v, &b"{}"[..]), "version {v}");
        }
    }

    #[test]
    fn overlong_prefix_is_an_error_not_a_wrapped_number() {
        let mut body = vec![b'\n'; 17];
        body.extend_from_slice(b"{}");
        assert!(matches!(decode(&body).map_err(|e| e.kind()), Err(crate::ErrorKind::Protocol)));
        // Exactly 16 characters is the largest that fits.
        let body = [b'\n'; 16];
        assert_eq!(decode(&body).unwrap().0, u32::MAX);
        // Whitespace-only bodies are all prefix.
        assert_eq!(decode(b"   ").unwrap(), (0, &b""[..]));
    }
}
