//! End to end: the application as served (`timelock::http::service`: the hot endpoints
//! dispatched directly, everything else through the router, both the root and `/timelock/api`
//! copies, admin routes included) over the in-memory bound store, driven in-process with
//! `tower::ServiceExt::oneshot`.
//!
//! Input: up to 8 requests separated by a line `~~~`, each written like HTTP/1.1:
//!
//! ```text
//! POST /tl/ts/ns1?x=1
//! Content-Type: application/json
//! User-Agent: atlasdb-http-client/2.0
//!
//! {"numTimestamps":3}
//! ~~~
//! GET /ns1/timestamp-management/ping
//! ```
//!
//! Method, path (namespace and other segments), query, headers (Content-Type, Content-Length,
//! User-Agent, anything) and body all come from the input; the seeds (`fuzz/corpus/router`) are
//! real requests for every route of the spec, so mutations start from the route table. The router
//! is built once per process (building it costs far more than a request); each input starts on a
//! fresh, empty store and registry (`InMemoryApp::reset`: no namespaces, timestamps or locks of
//! earlier inputs), so a failure replays from its input alone, and the requests of one input
//! share it, so sequences (lock, refresh, unlock; invalidate, then use; create namespaces up to
//! the cap) are reachable.
//!
//! Settings: at most 3 namespaces (cap exhaustion is reachable), 4 KiB bodies (413 reachable),
//! backups and migrations in a temporary directory. Lock waits run on a paused clock, so any
//! `acquireTimeoutMs` ends at once.
//!
//! What must hold for every answer:
//! * no panic, no hang (libFuzzer `-timeout`), no leak (`-detect_leaks`);
//! * no 1xx or 3xx (single node: nobody to redirect to);
//! * a 2xx JSON body is JSON; 204 has no body;
//! * every other answer with a body is a Conjure `SerializableError` (`application/json`,
//!   `errorCode`, `errorName`, `errorInstanceId`, `parameters` object); 429 and 503 may be bare
//!   (Conjure QoS answers have no body);
//! * 5xx only where the spec or the project's design asks for one: 500 for the namespace cap
//!   ("Maximum number of clients exceeded", spec section 4), a namespace whose timestamps are
//!   exhausted (overflow, spec section 2), invalidated (`timestamp-management/invalidate`, then
//!   used) or fenced; 503 `StorageUnavailable` only from `POST /admin/backups`, because the
//!   in-memory store cannot take file checkpoints. Any other 5xx (a decoder's 500 above all) fails;
//! * nothing written outside the backups and migrations directories.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const MAX_REQUESTS: usize = 8;
const SEPARATOR: &[u8] = b"\n~~~\n";

struct Env {
    runtime: tokio::runtime::Runtime,
    app: timelock::server::InMemoryApp,
    settings: timelock::config::Settings,
    /// The temporary root; the server may write only under `allowed`.
    root: PathBuf,
    allowed: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let root =
            std::env::temp_dir().join(format!("timelock-fuzz-router-{}", std::process::id()));
        // Two levels between the root and the directories the server writes, so that a path
        // escaping them by `..` still lands inside the root, where it is seen.
        let allowed = root.join("a").join("b");
        std::fs::create_dir_all(&allowed).unwrap();
        let mut settings = timelock::config::Settings::default();
        settings.namespaces.max = 3;
        settings.server.max_body_bytes = 4096;
        settings.backup.dir = allowed.join("backups");
        settings.migration.dir = allowed.join("migrations");
        let app = runtime
            .block_on(timelock::server::InMemoryApp::new(&settings))
            .unwrap();
        Env {
            runtime,
            app,
            settings,
            root,
            allowed,
        }
    })
}

struct Parsed {
    request: Request<Body>,
    method: Method,
    path: String,
}

fn parse(raw: &[u8]) -> Option<Parsed> {
    let (head, body) = match find(raw, b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let target = &first[space + 1..];
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(axum::http::Uri::try_from(target).ok()?);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let request = builder.body(Body::from(body.to_vec())).ok()?;
    let path = request.uri().path().to_string();
    Some(Parsed {
        request,
        method,
        path,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_requests(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_REQUESTS {
        match find(rest, SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// The checks of the module docs, for one answer.
fn check(p: &Parsed, status: StatusCode, headers: &axum::http::HeaderMap, body: &[u8]) {
    let what = || {
        format!(
            "{} {} -> {status} {:?}",
            p.method,
            p.path,
            String::from_utf8_lossy(body)
        )
    };
    assert!(
        !status.is_informational() && !status.is_redirection(),
        "{}",
        what()
    );
    if status.is_success() {
        if status == StatusCode::NO_CONTENT {
            assert!(body.is_empty(), "{}", what());
        } else if is_json(headers) && p.method != Method::HEAD {
            serde_json::from_slice::<serde_json::Value>(body)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", what()));
        }
        return;
    }
    let bare_allowed = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || p.method == Method::HEAD;
    if body.is_empty() && bare_allowed {
        return;
    }
    assert!(
        is_json(headers),
        "{}: error without application/json",
        what()
    );
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{}: error body not JSON: {e}", what()));
    for field in ["errorCode", "errorName", "errorInstanceId"] {
        assert!(v[field].is_string(), "{}: no {field}", what());
    }
    assert!(v["parameters"].is_object(), "{}: no parameters", what());
    if status.is_server_error() {
        let name = v["errorName"].as_str().unwrap();
        let message = v["parameters"]["message"].as_str().unwrap_or("");
        let allowed = match status {
            StatusCode::INTERNAL_SERVER_ERROR => match name {
                "Default:Internal" => message.contains("namespaces.max"),
                "TimeLock:TimestampsExhausted"
                | "TimeLock:NamespaceInvalidated"
                | "TimeLock:NamespaceFenced" => true,
                _ => false,
            },
            StatusCode::SERVICE_UNAVAILABLE => {
                name == "TimeLock:StorageUnavailable"
                    && p.method == Method::POST
                    && p.path == "/admin/backups"
                    && message.contains("cannot take file checkpoints")
            }
            _ => false,
        };
        assert!(allowed, "{}: a 5xx the spec does not ask for", what());
    }
}

/// Everything under `env.root` is under `env.allowed`'s backups or migrations, and
/// migrations are plain `<id>.json` files; then both are emptied for the next input.
fn check_and_clear_files(env: &Env) {
    fn only(dir: &Path, names: &[&str]) {
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(
                names.contains(&name.as_ref()),
                "{} written in {}",
                name,
                dir.display()
            );
        }
    }
    only(&env.root, &["a"]);
    only(&env.root.join("a"), &["b"]);
    only(&env.allowed, &["backups", "migrations"]);
    let migrations = &env.settings.migration.dir;
    if let Ok(entries) = std::fs::read_dir(migrations) {
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let id_ok = name.strip_suffix(".json").is_some_and(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }) || name.starts_with('.');
            assert!(id_ok, "migration written as {name:?}");
            assert!(e.file_type().unwrap().is_file(), "{name:?} is not a file");
        }
        // Fails if a handler is still writing after its answer.
        std::fs::remove_dir_all(migrations).expect("migrations dir removed");
    }
    let _ = std::fs::remove_dir_all(&env.settings.backup.dir);
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let requests: Vec<Parsed> = split_requests(data).into_iter().filter_map(parse).collect();
    if requests.is_empty() {
        return;
    }
    env.runtime.block_on(async {
        env.app.reset().await.expect("fresh registry");
        let router = &env.app.service;
        for p in requests {
            let Parsed {
                request,
                method,
                path,
            } = p;
            let response = router.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("response body").to_bytes();
            let p = Parsed {
                request: Request::new(Body::empty()),
                method,
                path,
            };
            check(&p, parts.status, &parts.headers, &body);
        }
    });
    check_and_clear_files(env);
});
