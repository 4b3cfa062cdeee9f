//! A newcomer receiving from an owner that sent arbitrary bytes and closed: it must fail
//! cleanly (never panic, hang or allocate what a header announces), and it can never report a
//! descriptor, since bytes alone carry none.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(received) = tableroll::fuzzing::newcomer_receives(data) {
        assert_eq!(received, 0, "{received} descriptors received from plain bytes {data:?}");
    }
});
