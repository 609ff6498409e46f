//! Conjure JSON request bodies: the input decoded as every body type the HTTP handlers read
//! (`timelock::fuzzing::REQUEST_BODIES`, the same `serde_json` calls as `JsonBody<T>`).
//!
//! Never a panic (a stack overflow on deep nesting included: serde_json's recursion limit), and
//! a type accepts only well-formed JSON: whatever decodes as some body type must also pass
//! serde_json's syntax check (`IgnoredAny`). The reference is the syntax check rather than
//! `serde_json::Value` because serde_json skips unknown fields (which the handlers ignore, as a
//! lenient reimplementation may: spec section 0) without checking that their strings are UTF-8
//! or their numbers fit an `f64`: `{"x":"<byte 0xE1>"}` and `{"x":1e88883}` are valid
//! `CommitTimestampRequest`s though `Value` refuses both. Found by this target; harmless.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timelock::fuzzing::REQUEST_BODIES;

fuzz_target!(|data: &[u8]| {
    let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    for body in REQUEST_BODIES {
        if (body.decode)(data).is_ok() {
            assert!(well_formed, "{} accepted malformed JSON", body.name);
        }
    }
});
