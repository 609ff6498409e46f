//! Conjure JSON request bodies: the input decoded as every body type the HTTP handlers read
//! (`timelock::fuzzing::REQUEST_BODIES`, the same `serde_json` calls as `JsonBody<T>`).
//!
//! Never a panic (a stack overflow on deep nesting included: serde_json's recursion limit), and
//! a type accepts only well-formed JSON: whatever UTF-8 input decodes as some body type must
//! also parse as a `serde_json::Value`. (Not for other input: serde_json skips unknown fields
//! without checking that their strings are UTF-8, so `{"x":"<byte 0xE1>"}` is a valid
//! `CommitTimestampRequest`, as the lenient decoding of unknown fields intends, spec section 0.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use timelock::fuzzing::REQUEST_BODIES;

fuzz_target!(|data: &[u8]| {
    let well_formed = std::str::from_utf8(data).is_err()
        || serde_json::from_slice::<serde_json::Value>(data).is_ok();
    for body in REQUEST_BODIES {
        if (body.decode)(data).is_ok() {
            assert!(well_formed, "{} accepted malformed JSON", body.name);
        }
    }
});
