//! Namespace names and the path segment they arrive in.
//!
//! 1. `validate_name` against an independent reading of TimeLock's rule
//!    `^(?!((tl|lw)$))[a-zA-Z0-9_-]+$` plus the reserved `leader` (spec section 4) and the
//!    1024-byte cap.
//! 2. Path handling: the input as the `{ns}` segment of `GET /{ns}/timestamp-management/ping`
//!    through the real router, raw (the fuzzer's own percent escapes) and fully
//!    percent-encoded. The answer must be `200 pong` exactly when the percent-decoded segment is
//!    a valid name, and otherwise a 4xx Conjure error; never a panic or a 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

fn expected_valid(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-'))
        && !matches!(name, b"tl" | b"lw" | b"leader")
}

/// `%XY` with two hex digits is a byte; anything else (a stray `%`) stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn percent_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Env {
    runtime: tokio::runtime::Runtime,
    router: timelock::http::direct::Dispatch,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let settings = timelock::config::Settings::default();
        let app = runtime
            .block_on(timelock::server::InMemoryApp::new(&settings))
            .unwrap();
        Env {
            runtime,
            router: app.service,
        }
    })
}

fn ping(segment: &str, decoded: &[u8]) {
    let uri = format!("/{segment}/timestamp-management/ping");
    let Ok(request) = Request::builder()
        .method(Method::GET)
        .uri(uri.as_str())
        .body(Body::empty())
    else {
        return; // not a URI a client could send
    };
    let env = env();
    let (status, body) = env.runtime.block_on(async {
        let response = env.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    let valid = std::str::from_utf8(decoded).is_ok() && expected_valid(decoded);
    if valid {
        assert_eq!(status, StatusCode::OK, "{uri}: {body:?}");
        assert_eq!(&body[..], b"pong");
    } else {
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{uri}: {status} {body:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("Conjure error body");
        assert!(
            v["errorCode"].is_string() && v["errorInstanceId"].is_string(),
            "{v}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The rule itself, on any string (lossy, so every input is a name).
    let name = String::from_utf8_lossy(data);
    let ok = timelock::namespaces::validate_name(&name).is_ok();
    assert_eq!(ok, expected_valid(name.as_bytes()), "{name:?}");
    if let Err(e) = timelock::namespaces::validate_name(&name) {
        assert!(matches!(
            e,
            timelock::error::TimelockError::InvalidArgument(_)
        ));
    }
    // 2a. Raw segment: the fuzzer's own escapes, if it is one path segment.
    if let Ok(raw) = std::str::from_utf8(data) {
        if !raw.contains(['/', '?', '#']) {
            ping(raw, &percent_decode(raw.as_bytes()));
        }
    }
    // 2b. Every byte that is not unreserved percent-encoded: any byte string can be sent.
    ping(&percent_encode(data), data);
});
