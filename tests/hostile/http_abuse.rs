//! Raw HTTP abuse against the real server: oversized bodies and headers, contradictory framing,
//! slow clients that never finish a request, and thousands of idle connections. The server must
//! answer with a 4xx or close the connection, never panic, keep serving everyone else, and give
//! back its sockets and memory afterwards.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

pub(crate) fn connect(server: &TestServer) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the server closes the connection or stops sending (at most `limit`).
pub(crate) fn read_reply(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn status_of(reply: &str) -> Option<u16> {
    reply.get(9..12)?.parse().ok()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn still_serves(server: &TestServer) {
    let r = post(server, "/abuse/timestamp/fresh-timestamp").await;
    assert_eq!(r.status, 200, "server stopped serving: {}", r.body);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_connection_is_closed() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__MAX_BODY_BYTES", "1024")]);
    // Declared too large: answered without reading the body.
    let mut s = connect(&server);
    s.write_all(
        b"POST /tl/ts/abuse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{",
    )
    .unwrap();
    let reply = read_reply(&mut s, Duration::from_secs(5));
    assert_eq!(status_of(&reply), Some(413), "{reply}");
    assert!(reply.contains("REQUEST_ENTITY_TOO_LARGE"), "{reply}");
    // Chunked and too large: cut off once the limit is passed.
    let mut s = connect(&server);
    s.write_all(b"POST /tl/ts/abuse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    for _ in 0..4 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let reply = read_reply(&mut s, Duration::from_secs(5));
    assert_eq!(status_of(&reply), Some(413), "{reply}");
    still_serves(&server).await;
}

#[tokio::test]
async fn contradictory_framing_and_oversized_headers_are_rejected() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Lengths",
            b"POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "unknown transfer coding",
            b"POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ),
        (
            "negative Content-Length",
            b"POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "1 MiB of headers",
            format!(
                "POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(1 << 20)
            )
            .into_bytes(),
        ),
        (
            "garbage request line",
            b"\x00\x01\x02 NOT HTTP\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let mut s = connect(&server);
        let _ = s.write_all(&bytes);
        let reply = read_reply(&mut s, Duration::from_secs(5));
        match status_of(&reply) {
            // A 4xx and then closed, or closed without an answer: both refuse.
            Some(code) if code != 200 => assert!((400..500).contains(&code), "{name}: {reply}"),
            Some(_) => {}
            None => assert!(reply.is_empty(), "{name}: {reply}"),
        }
        if name == "Content-Length and Transfer-Encoding" && status_of(&reply) == Some(200) {
            // RFC 9112 6.1: a server may process such a request by its Transfer-Encoding alone,
            // but must close the connection after it (no request smuggling behind it).
            assert!(
                reply.to_ascii_lowercase().contains("connection: close"),
                "{name}: served without closing: {reply}"
            );
            continue;
        }
        assert!(
            !reply.contains("HTTP/1.1 200"),
            "{name} was served: {reply}"
        );
    }
    still_serves(&server).await;
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test]
async fn slow_clients_that_never_finish_are_dropped() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(
        &data,
        &[("TIMELOCK__SERVER__HEADER_READ_TIMEOUT_MS", "1000")],
    );
    // Headers trickled and never finished.
    let mut slow = connect(&server);
    slow.write_all(b"POST /abuse/timestamp/fresh-timestamp HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"X-Drip: 1\r\n").is_err() {
            closed = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 512];
        if let Ok(0) = slow.read(&mut buf) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a client that never finished its headers was kept for 8 s"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that sends nothing at all is dropped too: the server closes it well before
    // the read gives up (reading until the close, not until a timeout).
    let mut silent = connect(&server);
    let waited = Instant::now();
    let reply = read_reply(&mut silent, Duration::from_secs(8));
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "a silent connection was kept for {:?}",
        waited.elapsed()
    );
    assert!(
        status_of(&reply).is_none_or(|c| c == 408),
        "silent connection got {reply}"
    );
    still_serves(&server).await;
}

#[tokio::test]
async fn thousands_of_idle_connections_neither_block_service_nor_leak() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let pid = server_pid(&server);
    still_serves(&server).await;
    let fds_before = open_fds(pid);
    let rss_before = rss_kb(pid);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect(("127.0.0.1", server.port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {} failed: {e}", idle.len()),
        }
    }
    // Everyone else is still served promptly.
    let started = Instant::now();
    for _ in 0..20 {
        still_serves(&server).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let fds_during = open_fds(pid);
    assert!(
        fds_during >= fds_before + 1900,
        "{fds_before} -> {fds_during}"
    );
    drop(idle);
    // Sockets are given back once the clients go away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = open_fds(pid);
        if now <= fds_before + 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds_before} -> {now} after the clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = rss_kb(pid);
    println!(
        "2000 idle connections: fds {fds_before} -> {fds_during} -> back; RSS {rss_before} kB -> {rss_after} kB"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew by more than 64 MiB: {rss_before} -> {rss_after} kB"
    );
    still_serves(&server).await;
}

fn server_pid(server: &TestServer) -> u32 {
    server.pid().expect("running")
}

/// Reads until the server closes the connection; `None` if it neither closed nor finished
/// within `limit` (it kept the connection open).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(_) => return None,
        }
    }
}

/// One path per route family (timestamps, transactions, v2 locks and lock watches, the v1 lock
/// service, the legacy `/{ns}/timelock/*` and `/{ns}/lock/*` routes, management), at the root
/// and under the prefix, with direct dispatch on and off.
const SLOW_BODY_PATHS: &[&str] = &[
    "/slow/timestamp/fresh-timestamp",
    "/slow/timestamp/fresh-timestamps?number=2",
    "/tl/ts/slow",
    "/tl/st/slow",
    "/tl/gct/slow",
    "/tl/l/slow",
    "/tl/ul2/slow",
    "/tl/rl2/slow",
    "/tl/wl/slow",
    "/lw/sw/slow",
    "/lk/laghl/slow",
    "/lk/rlrt/slow",
    "/lk/us/slow",
    "/slow/timelock/lock",
    "/slow/timelock/lock-v2",
    "/slow/timelock/unlock",
    "/slow/lock/lock/client",
    "/slow/lock/lock-with-full-response",
    "/slow/lock/unlock",
    "/slow/lock/refresh-lock-tokens",
    "/tl/multi/sts",
    "/slow/timestamp-management/fast-forward?currentTimestamp=5",
    "/tl/management/achieveConsensus",
    "/timelock/api/tl/l/slow",
    "/timelock/api/tl/st/slow",
    "/timelock/api/slow/timelock/lock",
    "/timelock/api/slow/lock/lock/client",
];

#[tokio::test]
async fn slow_bodies_are_cut_off_on_every_route_family() {
    for direct in ["true", "false"] {
        let (_dir, data) = temp_data_dir();
        let server = TestServer::start(
            &data,
            &[
                ("TIMELOCK__SERVER__BODY_READ_TIMEOUT_MS", "700"),
                ("TIMELOCK__SERVER__DIRECT_DISPATCH", direct),
            ],
        );
        // Every client declares 100 bytes, sends 4 and stops.
        let mut clients: Vec<(&str, TcpStream)> = SLOW_BODY_PATHS
            .iter()
            .map(|path| {
                let mut s = connect(&server);
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\""
                );
                s.write_all(head.as_bytes()).unwrap();
                (*path, s)
            })
            .collect();
        let started = Instant::now();
        for (path, s) in &mut clients {
            let reply = read_until_closed(s, Duration::from_secs(6)).unwrap_or_else(|| {
                panic!(
                    "{path} (direct dispatch {direct}): connection still open {:?} after 4 of 100 body bytes",
                    started.elapsed()
                )
            });
            assert!(
                reply.is_empty() || status_of(&reply) == Some(408),
                "{path} (direct dispatch {direct}): {reply}"
            );
            if !reply.is_empty() {
                assert!(reply.contains("server.body_read_timeout_ms"), "{reply}");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        // A body that arrives in pieces within the deadline is served as usual.
        let mut s = connect(&server);
        s.write_all(b"POST /tl/ts/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"numTi")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"mestamps\":2}").unwrap();
        let reply = read_until_closed(&mut s, Duration::from_secs(5)).expect("answered");
        assert_eq!(status_of(&reply), Some(200), "{reply}");
        still_serves(&server).await;
        assert!(!server.log().contains("panicked"), "{}", server.log());
    }
}

/// A thousand clients that declare a lock request's body and never finish it, ten times the
/// in-flight limit: fresh timestamps are served throughout, nothing is shed, and the server
/// closes every one of those connections once the body timeout has passed (the clients keep
/// them open), giving its sockets back.
#[tokio::test]
async fn a_thousand_unfinished_bodies_neither_starve_timestamps_nor_keep_sockets() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(
        &data,
        &[
            ("TIMELOCK__SERVER__MAX_IN_FLIGHT_REQUESTS", "100"),
            ("TIMELOCK__SERVER__BODY_READ_TIMEOUT_MS", "3000"),
        ],
    );
    let pid = server_pid(&server);
    still_serves(&server).await;
    let fds_before = open_fds(pid);
    let paths = [
        "/tl/l/many",
        "/many/timelock/lock",
        "/lk/laghl/many",
        "/tl/ts/many",
    ];
    let mut unfinished = Vec::new();
    for i in 0..1000 {
        let mut s = connect(&server);
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"requestId\"",
            paths[i % paths.len()]
        );
        s.write_all(head.as_bytes()).unwrap();
        unfinished.push(s);
    }
    for _ in 0..20 {
        still_serves(&server).await;
    }
    let metrics = get(&server, "/metrics").await.body;
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("timelock_shed_total{limit=\"in_flight\"}") && !l.ends_with(" 0")
        ),
        "requests were shed: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("timelock_shed_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The server, not the clients, closes them once the body timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds(pid);
        if now <= fds_before + 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds_before} -> {now}: unfinished bodies still hold their connections"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in &mut unfinished[..10] {
        let reply = read_until_closed(s, Duration::from_secs(2)).expect("closed by the server");
        assert!(
            reply.is_empty() || status_of(&reply) == Some(408),
            "{reply}"
        );
    }
    drop(unfinished);
    still_serves(&server).await;
}
