//! HTTP/1.1 pipelining: a client may write several requests back-to-back on one connection
//! before reading anything; the server must answer every one of them, in order (RFC 9112
//! section 9.3.2). Checked on the real binary over a plain TCP socket, with requests of every
//! hot kind (bare timestamps, batches, start transactions, lock and unlock, errors), written
//! all at once, split at awkward places, and in a long burst.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn number(&self) -> i64 {
        assert_eq!(self.status, 200, "{}", self.body);
        self.body
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {:?}", self.body))
    }
}

fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn request(method: &str, path: &str, body: Option<&str>) -> String {
    match body {
        None => format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
        Some(body) => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    }
}

/// Reads one response (Content-Length or chunked body; none for 204/304).
fn read_answer(reader: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status: u16 = parts.next().expect("status").parse().expect("status code");
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("header line");
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.trim().parse().expect("length")),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if status != 204 && status != 304 {
        let mut buf = vec![0; length.expect("content-length")];
        reader.read_exact(&mut buf).expect("body");
        body = buf;
    }
    Answer {
        status,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let stream = connect(&server);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    let lock_id = uuid::Uuid::new_v4();
    let descriptor = "cGlwZWxpbmVk"; // "pipelined"
    let start_id = uuid::Uuid::new_v4();
    let requestor = uuid::Uuid::new_v4();
    let lock_body = format!(
        r#"{{"requestId":"{lock_id}","lockDescriptors":["{descriptor}"],"acquireTimeoutMs":0}}"#
    );
    let start_body =
        format!(r#"{{"requestId":"{start_id}","requestorId":"{requestor}","numTransactions":1}}"#);
    let unlock_body = format!(r#"["{lock_id}"]"#);
    let all = [
        request("POST", "/pipe/timestamp/fresh-timestamp", None),
        request("POST", "/pipe/timestamp/fresh-timestamps?number=5", None),
        request("POST", "/tl/st/pipe", Some(&start_body)),
        request("POST", "/tl/l/pipe", Some(&lock_body)),
        // The same lock again, under another id, while held: unsuccessful.
        request(
            "POST",
            "/tl/l/pipe",
            Some(&lock_body.replace(&lock_id.to_string(), &uuid::Uuid::new_v4().to_string())),
        ),
        request("POST", "/tl/ul2/pipe", Some(&unlock_body)),
        request("GET", "/pipe/timestamp-management/ping", None),
        request("POST", "/no/such/endpoint/at/all", None),
        request("POST", "/timelock/api/pipe/timestamp/fresh-timestamp", None),
    ]
    .concat();
    // Everything in one write, before reading anything.
    writer.write_all(all.as_bytes()).unwrap();
    writer.flush().unwrap();

    let first = read_answer(&mut reader).number();
    let batch = read_answer(&mut reader);
    assert_eq!(batch.status, 200);
    let batch = batch.json();
    assert_eq!(batch["lowerBound"].as_i64(), Some(first + 1), "{batch}");
    assert_eq!(batch["upperBound"].as_i64(), Some(first + 5), "{batch}");

    let start = read_answer(&mut reader);
    assert_eq!(start.status, 200, "{}", start.body);
    let start = start.json();
    assert_eq!(
        start["immutableTimestamp"]["lock"]["requestId"],
        start_id.to_string().as_str()
    );
    let start_ts = start["timestamps"]["start"].as_i64().unwrap();
    assert!(start_ts > first + 5, "{start}");
    assert_eq!(start["timestamps"]["count"], 1);

    let locked = read_answer(&mut reader);
    assert_eq!(locked.status, 200, "{}", locked.body);
    let locked = locked.json();
    assert_eq!(locked["type"], "successful", "{locked}");
    assert_eq!(
        locked["successful"]["lockToken"]["requestId"],
        lock_id.to_string().as_str()
    );
    let refused = read_answer(&mut reader).json();
    assert_eq!(refused["type"], "unsuccessful", "{refused}");
    let unlocked = read_answer(&mut reader);
    assert_eq!(unlocked.status, 200);
    assert_eq!(unlocked.json(), serde_json::json!([lock_id.to_string()]));

    let ping = read_answer(&mut reader);
    assert_eq!((ping.status, ping.body.as_str()), (200, "pong"));
    let missing = read_answer(&mut reader);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errorCode"], "NOT_FOUND");
    let last = read_answer(&mut reader).number();
    assert!(last > start_ts, "{last} after {start_ts}");
}

#[test]
fn pipelined_requests_split_anywhere_and_long_bursts() {
    let (_dir, data) = temp_data_dir();
    let server = TestServer::start(&data, &[]);
    let stream = connect(&server);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    // A burst of 200 requests in one write: 200 answers, strictly increasing.
    let burst = request("POST", "/burst/timestamp/fresh-timestamp", None).repeat(200);
    writer.write_all(burst.as_bytes()).unwrap();
    let mut previous = 0;
    for i in 0..200 {
        let ts = read_answer(&mut reader).number();
        assert!(ts > previous, "answer {i}: {ts} after {previous}");
        previous = ts;
    }

    // The same bytes written in pieces that cut request lines, headers and bodies, with the
    // next request's beginning riding along with the previous one's end.
    let id = uuid::Uuid::new_v4();
    let body = r#"{"numTimestamps":3}"#;
    let stream_of_requests = [
        request("POST", "/tl/ts/burst", Some(body)),
        request("POST", "/burst/timestamp/fresh-timestamp", None),
        request(
            "POST",
            "/tl/l/burst",
            Some(&format!(
                r#"{{"requestId":"{id}","lockDescriptors":["AAEC"],"acquireTimeoutMs":0}}"#
            )),
        ),
        request("POST", "/tl/ul2/burst", Some(&format!(r#"["{id}"]"#))),
    ]
    .concat();
    let bytes = stream_of_requests.as_bytes();
    for piece in bytes.chunks(7) {
        writer.write_all(piece).unwrap();
        writer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let range = read_answer(&mut reader).json();
    let lower = range["inclusiveLower"].as_i64().unwrap();
    assert!(lower > previous, "{range}");
    assert_eq!(range["inclusiveUpper"].as_i64(), Some(lower + 2));
    let next = read_answer(&mut reader).number();
    assert_eq!(next, lower + 3);
    assert_eq!(read_answer(&mut reader).json()["type"], "successful");
    assert_eq!(
        read_answer(&mut reader).json(),
        serde_json::json!([id.to_string()])
    );

    // A pipelined request that asks to close: answered, then the connection ends.
    let closing = [
        request("POST", "/burst/timestamp/fresh-timestamp", None),
        "POST /burst/timestamp/fresh-timestamp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    ]
    .concat();
    writer.write_all(closing.as_bytes()).unwrap();
    let a = read_answer(&mut reader).number();
    let b = read_answer(&mut reader).number();
    assert!(b > a && a > next);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("connection closed");
    assert!(rest.is_empty(), "unexpected bytes after close: {rest:?}");
}
