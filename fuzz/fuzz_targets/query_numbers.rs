//! Query strings and the numbers in them: `query_str`, `query_i64`, `required_i64`
//! (`src/http/extract.rs`).
//!
//! The first byte picks the key looked up (the real keys, or one taken from the input); the rest
//! is the raw query string. Checked against `serde_urlencoded` (what the general path uses) and
//! `str::parse::<i64>`: the fast path must agree with the general one, a present value is a
//! number exactly when it parses as one, errors are always 400s, and `required_i64` is
//! `query_i64` with absence refused. Plus a round trip of any `i64`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timelock::error::TimelockError;
use timelock::http::extract::{query_i64, query_str, required_i64};

const KEYS: [&str; 4] = ["number", "currentTimestamp", "namespace", "name"];

fn is_400(e: &TimelockError) -> bool {
    matches!(e, TimelockError::InvalidArgument(_))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (key, query): (String, &str) = if (selector as usize) < 4 * 48 {
        (KEYS[selector as usize % 4].to_string(), &text)
    } else {
        // Key and query from the input, split at the first NUL.
        match text.split_once('\0') {
            Some((k, q)) => (k.to_string(), q),
            None => (String::new(), &text),
        }
    };

    let found = query_str(Some(query), &key);
    let reference: Result<Vec<(String, String)>, _> = serde_urlencoded::from_str(query);
    match (&found, &reference) {
        (Ok(value), Ok(pairs)) => {
            let first = pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            assert_eq!(value, &first, "query {query:?} key {key:?}");
        }
        (Err(e), Ok(_)) => panic!("query {query:?}: {e} though it is well formed"),
        (Err(e), Err(_)) => assert!(is_400(e)),
        // The fast path does not decode, so it cannot fail: only possible without % or +.
        (Ok(_), Err(_)) => assert!(!query.contains(['%', '+']), "{query:?}"),
    }
    assert_eq!(query_str(None, &key).unwrap(), None);

    let number = query_i64(Some(query), &key);
    match (&found, &number) {
        (Ok(None), Ok(None)) => {}
        (Ok(Some(v)), Ok(Some(n))) => assert_eq!(v.trim().parse::<i64>().ok(), Some(*n)),
        (Ok(Some(v)), Err(e)) => {
            assert!(is_400(e));
            assert!(
                v.trim().parse::<i64>().is_err(),
                "{v:?} parses but was refused"
            );
        }
        (Err(_), Err(e)) => assert!(is_400(e)),
        (f, n) => panic!("query_str {f:?} but query_i64 {n:?} for {query:?}"),
    }
    match (number, required_i64(Some(query), &key)) {
        (Ok(Some(a)), Ok(b)) => assert_eq!(a, b),
        (Ok(None), Err(e)) | (Err(_), Err(e)) => assert!(is_400(&e)),
        (a, b) => panic!("query_i64 {a:?} but required_i64 {b:?}"),
    }

    // Round trip: any i64, plain and percent-encoded, among other pairs.
    if rest.len() >= 8 {
        let n = i64::from_le_bytes(rest[..8].try_into().unwrap());
        let plain = format!("x=1&{key}={n}&{key}=7");
        let encoded = format!("x=%20&{key}=%2B{n}").replace("%2B-", "-");
        if !key.is_empty() && key != "x" && !key.contains(['&', '=', '%', '+']) {
            assert_eq!(query_i64(Some(&plain), &key).unwrap(), Some(n));
            if n >= 0 {
                assert_eq!(query_i64(Some(&encoded), &key).unwrap(), Some(n));
            }
        }
    }
});
