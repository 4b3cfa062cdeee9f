//! Arbitrary bytes as a frame body (and the first four as a frame header): decoding must never
//! panic, and what decodes must agree with the protocol's definition of a body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tableroll::fuzzing::{decode_frames, decode_version, encode_version};

/// The version prefix's characters, by 2-bit value.
const DIGITS: [u8; 4] = [b' ', b'\t', b'\r', b'\n'];

fuzz_target!(|data: &[u8]| {
    let list_decoded = decode_frames(data);

    // The maximal run of prefix characters, and its value folded from the last character to the
    // first in 64 bits, so that a run that does not fit 32 bits shows.
    let run = data.iter().take_while(|b| DIGITS.contains(b)).count();
    let folded = data[..run]
        .iter()
        .rev()
        .fold(0u64, |v, b| (v << 2) + DIGITS.iter().position(|d| d == b).unwrap_or(0) as u64);

    match decode_version(data) {
        Ok((version, json)) => {
            assert!(run <= 16, "a prefix of {run} characters was accepted");
            assert_eq!(u64::from(version), folded, "prefix {:?}", &data[..run]);
            assert_eq!(json, &data[run..], "the JSON starts right after the whole prefix");
            // Re-encoding gives the same digits up to trailing zeros, and decodes back.
            let canonical = encode_version(version);
            let significant = |d: &[u8]| d.len() - d.iter().rev().take_while(|&&b| b == b' ').count();
            assert_eq!(&canonical[..significant(&canonical)], &data[..significant(&data[..run])]);
            assert_eq!(decode_version(&canonical).ok(), Some((version, &[][..])));
        }
        Err(_) => assert!(run > 16, "a prefix of {run} characters was refused"),
    }

    if list_decoded {
        // A descriptor list is a JSON array after a prefix that fits 32 bits. Checked for syntax
        // only: the values of unknown keys are skipped unchecked (serde_json does not validate
        // the UTF-8 of strings or the range of numbers it skips, nor does Go's reader), so a
        // list may hold `"x":"\xaa"` or `"x":1e999` and still decode.
        assert!(run <= 16);
        let json = &data[run..];
        let starts_array = json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(json);
        assert!(starts_array && syntax.is_ok(), "decoded a list from {data:?}");
    }
});
