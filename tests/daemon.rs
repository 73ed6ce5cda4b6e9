//! End-to-end: a real `engram serve` process, its real socket and TCP port,
//! and a real SQLite file, driven by a real HTTP client.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use rustix::process::Signal;
use support::{Sandbox, get_unix, request_tcp};

#[test]
fn healthz_over_the_socket_reports_version_uptime_and_store() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    let reply = get_unix(&daemon.socket, "/healthz");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let health = reply.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(health["store"]["status"], "ok");
    assert_eq!(health["store"]["schema_version"], engram_store::SCHEMA_VERSION);
    let journal = sandbox.data_dir().join("journal.sqlite3");
    assert_eq!(health["store"]["path"], journal.display().to_string());
    assert!(journal.is_file());
}

#[test]
fn socket_is_created_private_to_the_owner() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(daemon.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o077, 0, "socket directory is open to others");
}

#[test]
fn metrics_count_requests_by_route_and_status() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    for _ in 0..3 {
        assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);
    }
    assert_eq!(get_unix(&daemon.socket, "/nope").status, StatusCode::NOT_FOUND);
    let reply = get_unix(&daemon.socket, "/metrics");
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.body;
    assert!(text.contains(r#"engram_http_requests_total{method="GET",route="/healthz",status="200"} 3"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
    assert!(text.contains("engram_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("engram_store_size_bytes "), "{text}");
    assert!(text.contains("engram_uptime_seconds "), "{text}");
}

#[test]
fn unknown_route_gets_a_json_404() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    let reply = get_unix(&daemon.socket, "/v1/nothing-here");
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["error"]["code"], "not_found");
}

#[test]
fn tcp_needs_the_token_a_loopback_host_and_an_allowed_origin() {
    let sandbox = Sandbox::new();
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let daemon = sandbox
        .start(&[("ENGRAM_SERVER__TCP", &addr), ("ENGRAM_SERVER__ALLOWED_ORIGINS", r#"["http://localhost:3000"]"#)]);
    let token_file = sandbox.data_dir().join("http.token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);

    let addr = addr.parse().unwrap();
    let call = |headers: &[(&str, &str)]| {
        let mut builder = Request::get("/healthz");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        request_tcp(addr, builder.body(Full::new(Bytes::new())).unwrap())
    };
    let host = format!("127.0.0.1:{port}");
    let bearer = format!("Bearer {token}");

    let ok = call(&[("host", &host), ("authorization", &bearer)]);
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.json()["status"], "ok");

    let missing = call(&[("host", &host)]);
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    assert_eq!(missing.json()["error"]["code"], "missing_token");

    let wrong = call(&[("host", &host), ("authorization", "Bearer not-the-token")]);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let rebinding = call(&[("host", &format!("attacker.example:{port}")), ("authorization", &bearer)]);
    assert_eq!(rebinding.status, StatusCode::MISDIRECTED_REQUEST);

    let foreign = call(&[("host", &host), ("authorization", &bearer), ("origin", "http://evil.example")]);
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let allowed = call(&[("host", &host), ("authorization", &bearer), ("origin", "http://localhost:3000")]);
    assert_eq!(allowed.status, StatusCode::OK);

    // The socket needs no token: its file mode is the access control.
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);

    // The same token survives a restart.
    drop(daemon);
    let _again = sandbox.start(&[("ENGRAM_SERVER__TCP", &format!("127.0.0.1:{port}"))]);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
}

#[test]
fn sigterm_drains_exits_zero_and_removes_the_socket() {
    let sandbox = Sandbox::new();
    // A long grace: an idle keep-alive connection must not hold shutdown up.
    let mut daemon = sandbox.start(&[("ENGRAM_SERVER__SHUTDOWN_GRACE_MS", "60000")]);
    let mut idle = UnixStream::connect(&daemon.socket).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let started = Instant::now();
    daemon.signal(Signal::TERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", daemon.stderr());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!daemon.socket.exists(), "socket left behind");
    let log = daemon.stderr();
    assert!(log.contains("SIGTERM") && log.contains("engram stopped"), "{log}");

    // SIGINT behaves the same.
    let mut daemon = sandbox.start(&[]);
    daemon.signal(Signal::INT);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", daemon.stderr());
    assert!(!daemon.socket.exists());
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let sandbox = Sandbox::new();
    let first = sandbox.start(&[]);
    let other_socket = sandbox.path().join("second.sock");
    let output = sandbox.run(&["serve"], &[("ENGRAM_SERVER__SOCKET", other_socket.to_str().unwrap())]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let pid = first.child.id().to_string();
    assert!(stderr.contains("is using data dir") && stderr.contains(&pid), "{stderr}");
    assert!(!other_socket.exists());
    // The first one is unharmed.
    assert_eq!(get_unix(&first.socket, "/healthz").status, StatusCode::OK);
}

#[test]
fn a_live_socket_of_another_daemon_is_not_stolen() {
    let one = Sandbox::new();
    let two = Sandbox::new();
    let first = one.start(&[]);
    let shared = first.socket.to_str().unwrap().to_owned();
    let output = two.run(&["serve"], &[("ENGRAM_SERVER__SOCKET", &shared)]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another process is serving on"), "{stderr}");
    assert_eq!(get_unix(&first.socket, "/healthz").status, StatusCode::OK);
}

#[test]
fn a_stale_socket_is_recovered() {
    let sandbox = Sandbox::new();
    let socket = sandbox.socket();
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file nobody listens on, as a killed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let daemon = sandbox.start(&[]);
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);
    assert!(daemon.stderr().contains("stale socket"), "{}", daemon.stderr());
}

#[test]
fn a_kill_9_leaves_a_stale_socket_that_the_next_start_recovers() {
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.start(&[]);
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(10));
    assert!(daemon.socket.exists());
    let again = sandbox.start(&[]);
    assert_eq!(get_unix(&again.socket, "/healthz").status, StatusCode::OK);
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("not-a-socket");
    std::fs::write(&path, b"precious").unwrap();
    let output = sandbox.run(&["serve"], &[("ENGRAM_SERVER__SOCKET", path.to_str().unwrap())]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

fn raw_exchange(socket: &std::path::Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before taking every byte (an
    // oversized head): a broken pipe here is an answer, not a failure.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_http_gets_400_and_the_daemon_keeps_serving() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    for garbage in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let reply = raw_exchange(&daemon.socket, garbage);
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{garbage:?} -> {reply}");
    }
    // Oversized head.
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b"\r\n\r\n");
    let reply = raw_exchange(&daemon.socket, &huge);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);
}

#[test]
fn a_100_mb_body_is_refused_with_413_before_it_is_sent() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[]);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let length = 100 * 1024 * 1024;
    let head = format!(
        "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Send only the first MiB; the answer must come without the other 99.
    stream.write_all(&vec![b'x'; 1 << 20]).ok();
    let mut reply = vec![0u8; 4096];
    let n = stream.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body_too_large") && reply.contains("server.max_body_bytes"), "{reply}");

    // The daemon did not buffer the body: its resident memory stayed small.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 80 * 1024, "daemon RSS {rss_kib} KiB after a refused 100 MB body");
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);
}

#[test]
fn a_slow_or_silent_connection_is_timed_out() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start(&[("ENGRAM_SERVER__HEADER_TIMEOUT_MS", "300")]);

    // Slowloris: a request head that never completes.
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: local").unwrap();
    // A connection that never sends a byte.
    let mut silent = UnixStream::connect(&daemon.socket).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    // A keep-alive connection left idle after one request.
    let mut idle = UnixStream::connect(&daemon.socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut served = Vec::new();
    while !served.ends_with(b"}}") {
        let mut chunk = [0u8; 4096];
        let n = idle.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the whole response: {}", String::from_utf8_lossy(&served));
        served.extend_from_slice(&chunk[..n]);
    }
    assert!(served.starts_with(b"HTTP/1.1 200"));

    // Meanwhile everyone else is served.
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);

    for stream in [&mut slow, &mut silent, &mut idle] {
        let mut buf = Vec::new();
        let result = stream.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        // hyper answers 408 or just closes; either way the connection ends
        // well before the 20 s read timeout (which would be an error here).
        assert!(result.is_ok(), "connection not closed by the server: {result:?}");
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line_to_stderr() {
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.spawn_with(&["--log-format", "json"], &[]);
    daemon.wait_ready();
    daemon.signal(Signal::TERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
    let log = daemon.stderr();
    let events: Vec<serde_json::Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    let ready = events.iter().find(|e| e["fields"]["message"] == "engram is ready").expect(&log);
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["fields"]["socket"], daemon.socket.display().to_string());
}

/// `kill -9` during a burst of memory appends: every acknowledged turn is
/// in the journal after a restart, in order, and the compact memory
/// catches up with them (with the real default models).
#[test]
fn acknowledged_turns_survive_kill_9_and_their_summaries_catch_up() {
    use serde_json::{Value, json};
    let sandbox = Sandbox::new();
    let models = support::models_dir().display().to_string();
    let env = [("ENGRAM_MODELS__DIR", models.as_str())];
    let mut daemon = sandbox.start(&env);
    let socket = daemon.socket.clone();
    let (acked, acks) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        for i in 0.. {
            let text = format!("Burst turn {i}: the parcel number is {}.", 7_000 + i);
            let body = json!({"conversation": "burst", "speaker": if i % 2 == 0 { "user" } else { "assistant" }, "text": text});
            // Fails once the daemon is gone: the burst ends there.
            let Ok(reply) = std::panic::catch_unwind(|| support::post_json(&socket, "/v1/memory/turns", &body)) else {
                break;
            };
            if reply.status != StatusCode::OK || acked.send(text).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 40 {
        acknowledged.push(acks.recv().expect("the writer stopped early"));
    }
    daemon.signal(Signal::KILL);
    daemon.wait_exit(Duration::from_secs(10));
    let _ = writer.join();
    acknowledged.extend(acks.try_iter());

    let again = sandbox.start(&env);
    let reply = support::post_json(&again.socket, "/v1/memory/export", &json!({"conversation": "burst"}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let export: Value = serde_json::from_str(&reply.body).unwrap();
    let stored: Vec<&str> = export["turns"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
    // Every acknowledged turn, in order; at most one more (journaled, its
    // answer lost with the process).
    assert!(stored.len() >= acknowledged.len() && stored.len() <= acknowledged.len() + 1, "{stored:?}");
    assert_eq!(&stored[..acknowledged.len()], acknowledged.as_slice());
    let last = stored.len() - 1;
    again.wait_for_log(&format!("to_turn={last}"), Duration::from_secs(300));
    let reply = support::post_json(&again.socket, "/v1/memory/summary", &json!({"conversation": "burst"}));
    let summary: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(summary["level1"]["last_ordinal"], last, "{summary}");
    assert_eq!(summary["pending_turns"], 0, "{summary}");
}
