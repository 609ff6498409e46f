//! Overload against the real server: beyond `server.max_in_flight_requests` requests and
//! `server.max_connections` connections it sheds with 429 and `Retry-After` instead of queueing,
//! keeps observability routes open, answers every accepted request correctly, and recovers as
//! soon as the load goes away.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use uuid::Uuid;

fn lock_body(descriptor: &str, timeout_ms: i64) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.encode(descriptor);
    json!({"requestId": Uuid::new_v4(), "lockDescriptors": [bytes], "acquireTimeoutMs": timeout_ms, "clientDescription": "overload"})
        .to_string()
}

/// The value of a metric line `name{labels} value`, summed over matching lines.
async fn metric(server: &TestServer, prefix: &str) -> f64 {
    // At a connection limit this very request may be shed until the test's own connections
    // are closed on the server's side: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let reply = client().get(server.url("/metrics")).send().await;
        match reply {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap_or_default(),
            _ if Instant::now() > deadline => break String::new(),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_429_with_retry_after_and_service_recovers() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__MAX_IN_FLIGHT_REQUESTS", "4")]);
    let holder = post_json(&server, "/tl/l/shed", &lock_body("L", 0)).await;
    assert_eq!(holder.status, 200, "{holder:?}");
    assert_eq!(holder.json()["type"], "successful", "{holder:?}");

    // Four requests queue on the held lock: the server is at its limit.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url("/tl/l/shed");
            tokio::spawn(async move {
                send(
                    client()
                        .post(url)
                        .header("content-type", "application/json")
                        .body(lock_body("L", 2_000)),
                )
                .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "timelock_lock_waiters").await < 4.0 {
        assert!(Instant::now() < deadline, "waiters never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A fifth request is refused at once, with no body and a Retry-After.
    let started = Instant::now();
    let refused = client()
        .post(server.url("/tl/ts/shed"))
        .header("content-type", "application/json")
        .body(r#"{"numTimestamps": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed, not queued"
    );
    assert_eq!(
        refused.text().await.unwrap(),
        "",
        "QoS answers have no body"
    );
    let legacy = post(&server, "/shed/timestamp/fresh-timestamp").await;
    assert_eq!(legacy.status, 429);

    // Observability stays available at the limit.
    assert_eq!(get(&server, "/health/ready").await.status, 200);
    assert!(metric(&server, "timelock_shed_total{limit=\"in_flight\"}").await >= 2.0);
    // Shed answers are counted by route and status too, where dashboards look for 429s.
    assert_eq!(
        metric(
            &server,
            r#"timelock_http_requests_total{method="POST",route="/{ns}/timestamp/fresh-timestamp",status="429"}"#
        )
        .await,
        1.0
    );

    // The waiters time out (their own acquireTimeoutMs); the slots come back.
    for waiter in waiters {
        let reply = waiter.await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["type"], "unsuccessful", "{reply:?}");
    }
    let first = post(&server, "/shed/timestamp/fresh-timestamp")
        .await
        .number();
    let second = post(&server, "/shed/timestamp/fresh-timestamp")
        .await
        .number();
    assert!(second > first);
}

fn request_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"POST /conn/timestamp/fresh-timestamp HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_limit_get_429_and_are_closed_then_slots_free_up() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[("TIMELOCK__SERVER__MAX_CONNECTIONS", "3")]);
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let connect = || {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
        for s in &mut held {
            let reply = request_on(s);
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        }
        // The fourth connection is refused with a 429 and closed.
        let mut extra = connect();
        let _ = extra.write_all(
            b"POST /conn/timestamp/fresh-timestamp HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        );
        let mut reply = String::new();
        extra.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 429"), "{reply:?}");
        assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply:?}");
        // The held connections still work.
        for s in &mut held {
            assert!(request_on(s).starts_with("HTTP/1.1 200"));
        }
        // Closing one frees a slot for a new connection.
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut again = connect();
            let reply = request_on(&mut again);
            if reply.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(reply.starts_with("HTTP/1.1 429"), "{reply:?}");
            assert!(Instant::now() < deadline, "slot never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(metric(&server, "timelock_shed_total{limit=\"connections\"}").await >= 1.0);
}

/// Many more clients than the server admits hammer it for a bounded time: every answer is a
/// correct timestamp or a 429, some load is shed, and right after the load stops every request
/// succeeds again.
#[tokio::test]
async fn under_overload_answers_stay_correct_and_service_recovers_at_once() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(
        &data,
        &[
            ("TIMELOCK__SERVER__MAX_CONNECTIONS", "16"),
            ("TIMELOCK__SERVER__MAX_IN_FLIGHT_REQUESTS", "8"),
        ],
    );
    let clients = 128;
    let run_for = Duration::from_secs(3);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = server.url("/load/timestamp/fresh-timestamp");
            tokio::spawn(async move {
                let client = client();
                let (mut ok, mut shed, mut last) = (0u64, 0u64, i64::MIN);
                let mut latencies = Vec::new();
                let stop = Instant::now() + run_for;
                while Instant::now() < stop {
                    let started = Instant::now();
                    match client.post(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let ts: i64 = r.text().await.unwrap().parse().unwrap();
                            assert!(ts > last, "timestamp went back: {ts} after {last}");
                            last = ts;
                            ok += 1;
                            latencies.push(started.elapsed());
                        }
                        Ok(r) if r.status() == 429 => {
                            assert_eq!(r.headers()["retry-after"], "1");
                            shed += 1;
                            // A real client waits Retry-After; a hostile one does not. Pause a
                            // little so the run is not all refusals.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        // A refused connection may be closed under the client's feet.
                        Err(_) => shed += 1,
                    }
                }
                (ok, shed, latencies)
            })
        })
        .collect();
    let (mut ok, mut shed, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        let (o, s, l) = t.await.unwrap();
        ok += o;
        shed += s;
        latencies.extend(l);
    }
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    eprintln!("overload: {clients} clients, {ok} served, {shed} shed, accepted p99 {p99:?}");
    assert!(ok > 0, "nothing was served");
    assert!(
        shed > 0,
        "nothing was shed at {clients} clients against 16 connections"
    );

    // Recovery: within seconds of the load stopping (the clients' connections take a moment
    // to close on the server's side), 20 requests in a row succeed.
    let recovered = Instant::now();
    let http = client();
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(
            recovered.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s"
        );
        match http
            .post(server.url("/load/timestamp/fresh-timestamp"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => in_a_row += 1,
            Ok(r) => {
                assert_eq!(r.status(), 429, "only shedding may refuse");
                in_a_row = 0;
            }
            Err(_) => in_a_row = 0,
        }
    }
    eprintln!(
        "overload: 20 requests in a row succeeded {:?} after the load",
        recovered.elapsed()
    );
}

/// Clients that declare a body and drip it cannot fill the in-flight limit: a slot is taken only
/// once the whole body is in, so `fresh-timestamp` stays served throughout, and each dripping
/// client is served once it has finished sending.
#[tokio::test]
async fn clients_dripping_their_bodies_cannot_starve_fresh_timestamps() {
    const LIMIT: usize = 6;
    let (_dir, data) = temp_data_dir();
    let limit = LIMIT.to_string();
    let server = TestServer::start(
        &data,
        &[
            ("TIMELOCK__SERVER__MAX_IN_FLIGHT_REQUESTS", limit.as_str()),
            ("TIMELOCK__SERVER__BODY_READ_TIMEOUT_MS", "20000"),
        ],
    );
    // Twice the limit's worth, on the lock, unlock, lock-watch, v1 and timestamp routes.
    let paths = [
        "/tl/l/drip",
        "/drip/timelock/lock",
        "/tl/ts/drip",
        "/lk/laghl/drip",
        "/lw/sw/drip",
        "/drip/lock/lock/client",
    ];
    let port = server.port;
    let drippers: Vec<_> = (0..2 * LIMIT)
        .map(|i| {
            let path = paths[i % paths.len()];
            let body = if path == "/tl/ts/drip" {
                r#"{"numTimestamps":1}"#.to_string()
            } else {
                lock_body(&format!("D{i}"), 0)
            };
            tokio::task::spawn_blocking(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                // A few bytes every 100 ms: about two seconds for the whole body.
                let bytes = body.as_bytes();
                let step = bytes.len().div_ceil(20);
                for piece in bytes.chunks(step) {
                    s.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                (path, reply)
            })
        })
        .collect();
    // While they drip, fresh timestamps keep coming, none refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last = 0;
    for _ in 0..20 {
        let r = post(&server, "/other/timestamp/fresh-timestamp").await;
        assert_eq!(
            r.status, 200,
            "fresh-timestamp refused while clients drip their bodies: {r:?}"
        );
        let ts = r.number();
        assert!(ts > last);
        last = ts;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for dripper in drippers {
        let (path, reply) = dripper.await.unwrap();
        // Served by its handler: 200 where the body is that route's request, else its 4xx for
        // a body of the wrong shape; never shed, never timed out.
        let status = reply.get(9..12).unwrap_or("");
        if path == "/tl/l/drip" || path == "/tl/ts/drip" {
            assert_eq!(status, "200", "{path}: {reply}");
        }
        assert!(
            !status.is_empty() && status != "429" && status != "408",
            "{path}: a client that finished its body was not served: {reply}"
        );
    }
    assert_eq!(
        metric(&server, "timelock_shed_total{limit=\"in_flight\"}").await,
        0.0
    );
}
