//! The plugin host against real components built from `plugins/` (by
//! `scripts/build-plugins`): the calculator's vectors and schemas, and every
//! hostile fixture stopped with a clear error while the host keeps serving,
//! grants, and upgrades held until approved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use engram_plugin_host::grants::Grants;
use engram_plugin_host::{
    ApproveError, CallError, ComponentError, Hit, LoadError, ManifestError, PluginHost, PrivateAddresses, Recall,
    Revocation, Scope,
};
use serde_json::{Value, json};

/// Builds and installs the plugins (fixtures included) once per test binary.
fn installed() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("engram-plugins-{}", std::process::id()));
        let status = std::process::Command::new(root.join("scripts/build-plugins"))
            .arg("--with-fixtures")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run scripts/build-plugins");
        assert!(status.success(), "scripts/build-plugins failed");
        dir
    })
}

/// A private copy of some installed plugins.
fn plugins_dir(ids: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        copy_dir(&installed().join(id), &dir.path().join(id));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn host(ids: &[&str]) -> (Arc<PluginHost>, tempfile::TempDir) {
    let dir = plugins_dir(ids);
    let host = PluginHost::new(None).unwrap();
    let report = host.load_dir(dir.path());
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.loaded.len(), ids.len());
    (Arc::new(host), dir)
}

#[test]
fn calc_publishes_namespaced_tools_with_schemas_and_computes_exactly() {
    let (host, _dir) = host(&["calc"]);
    let tools = host.list_tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["calc.convert", "calc.evaluate"]);
    assert!(tools.iter().all(|t| t.annotations.read_only && t.input_schema["type"] == "object"));
    let out = host.call_tool_blocking("calc.evaluate", &json!({"expression": "1/3 + 1/6"})).unwrap();
    assert_eq!(out, json!({"value": "1/2", "decimal": "0.5", "is_integer": false}));
    let out = host.call_tool_blocking("calc.convert", &json!({"value": "1", "from": "mi", "to": "ft"})).unwrap();
    assert_eq!(out["value"], "5280");
}

#[test]
fn arguments_are_validated_before_the_guest_and_errors_are_structured() {
    let (host, _dir) = host(&["calc"]);
    let err = host.call_tool_blocking("calc.evaluate", &json!({"expr": "1"})).unwrap_err();
    assert!(matches!(&err, CallError::InvalidArguments { tool, .. } if tool == "calc.evaluate"), "{err:?}");
    let err = host.call_tool_blocking("calc.evaluate", &json!({"expression": 5})).unwrap_err();
    assert!(matches!(&err, CallError::InvalidArguments { path, .. } if path == "/expression"), "{err:?}");
    // The plugin's own verdict on well-formed but meaningless input.
    let err = host.call_tool_blocking("calc.evaluate", &json!({"expression": "1/0"})).unwrap_err();
    assert!(
        matches!(&err, CallError::ToolFailed { kind, message, .. } if kind == "invalid_arguments" && message.contains("division by zero")),
        "{err:?}"
    );
    let err = host.call_tool_blocking("calc.nothing", &json!({})).unwrap_err();
    assert_eq!(err, CallError::UnknownTool { tool: "calc.nothing".into() });
    // Results are checked against the tool's output schema.
    let (host, _dir) = self::host(&["hostile"]);
    let liar = |kind: &str| host.call_tool_blocking("hostile.liar", &json!({"kind": kind}));
    assert_eq!(liar("honest").unwrap(), json!({"answer": 42}));
    let lie = liar("typed").unwrap_err();
    assert!(matches!(&lie, CallError::InvalidOutput { path, .. } if path == "/answer"), "{lie:?}");
    let lie = liar("missing").unwrap_err();
    assert!(matches!(&lie, CallError::InvalidOutput { message, .. } if message.contains("answer")), "{lie:?}");
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["error"], "unknown_tool");
}

fn hostile(host: &PluginHost, tool: &str, args: Value) -> Result<Value, CallError> {
    host.call_tool_blocking(&format!("hostile.{tool}"), &args)
}

#[test]
fn the_hostile_suite_is_stopped_with_clear_errors_and_the_host_keeps_serving() {
    let (host, _dir) = host(&["hostile", "calc"]);
    match hostile(&host, "spin", json!({})).unwrap_err() {
        CallError::Budget { budget, limit, used, .. } => {
            assert_eq!((budget.as_str(), limit), ("wall_ms", 200));
            assert!(used >= 200, "stopped after {used} ms: before its budget");
        }
        other => panic!("spin: {other:?}"),
    }
    match hostile(&host, "allocate", json!({})).unwrap_err() {
        CallError::Budget { budget, limit, used, .. } => {
            assert_eq!((budget.as_str(), limit), ("memory_mib", 16));
            assert!(used > 16, "{used}");
        }
        other => panic!("allocate: {other:?}"),
    }
    let err = hostile(&host, "recurse", json!({})).unwrap_err();
    assert!(
        matches!(&err, CallError::Crashed { message, .. } if message.contains("stack overflow") && message.len() < 200),
        "{err:?}"
    );
    for path in ["../../../../etc/passwd", "/etc/passwd", "plugin.toml"] {
        let err = hostile(&host, "read_file", json!({"path": path})).unwrap_err();
        assert!(matches!(err, CallError::ToolFailed { .. }), "{path}: {err:?}");
    }
    // The host has an environment (PATH at least); the guest sees none of it.
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(hostile(&host, "env", json!({})).unwrap(), json!([]));
    for address in ["127.0.0.1:22", "169.254.169.254:80", "[::1]:22"] {
        let err = hostile(&host, "connect", json!({"address": address})).unwrap_err();
        assert!(matches!(err, CallError::ToolFailed { .. }), "{address}: {err:?}");
    }
    let err = hostile(&host, "flood", json!({"bytes": 6 << 20})).unwrap_err();
    assert!(
        matches!(&err, CallError::Budget { budget, .. } if budget == "output_bytes" || budget == "memory_mib"),
        "{err:?}"
    );
    assert_eq!(hostile(&host, "print", json!({})).unwrap(), json!("printed"));
    // Host-side allocations on the guest's behalf are capped too.
    let err = hostile(&host, "hoard", json!({})).unwrap_err();
    // 256 live resources at most: far below the usual 1,024 open files.
    assert!(matches!(&err, CallError::Crashed { message, .. } if message.contains("256 live resources")), "{err:?}");
    let err = hostile(&host, "shout", json!({"bytes": 9 << 20})).unwrap_err();
    assert!(matches!(&err, CallError::Crashed { message, .. } if message.contains("hostcall fuel")), "{err:?}");
    assert_eq!(hostile(&host, "shout", json!({"bytes": 1000})).unwrap(), json!("shouted"));
    // After all that, every plugin still answers.
    assert_eq!(hostile(&host, "echo", json!({"still": "here"})).unwrap(), json!({"still": "here"}));
    let out = host.call_tool_blocking("calc.evaluate", &json!({"expression": "6*7"})).unwrap();
    assert_eq!(out["value"], "42");
}

#[test]
fn a_bad_plugin_is_reported_and_skipped_while_the_others_load() {
    let dir = plugins_dir(&["calc"]);
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("plugin.toml"), "id = \"broken\"\nversion = \"1\"\ndescription = \"x\"\n").unwrap();
    std::fs::write(broken.join("broken.wasm"), b"\0asm not really").unwrap();
    let misnamed = dir.path().join("other");
    std::fs::create_dir_all(&misnamed).unwrap();
    std::fs::write(misnamed.join("plugin.toml"), "id = \"calc2\"\nversion = \"1\"\ndescription = \"x\"\n").unwrap();
    let host = PluginHost::new(None).unwrap();
    let report = host.load_dir(dir.path());
    assert_eq!(report.loaded, [("calc".to_owned(), "0.1.0".to_owned())]);
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert!(host.list_tools().iter().all(|t| t.plugin == "calc"));
    // A description over the limit (descriptions reach the model verbatim).
    copy_dir(&installed().join("hostile-long"), &dir.path().join("hostile-long"));
    let report = host.load_dir(dir.path());
    let long = report.failed.iter().find(|(folder, _)| folder.ends_with("hostile-long")).map(|(_, e)| e);
    assert!(
        matches!(
            long,
            Some(LoadError::Component { problem: ComponentError::DescriptionTooLong { max: 4096, .. }, .. })
        ),
        "{long:?}"
    );
    assert!(long.is_some_and(|e| e.to_string().contains("description longer than 4096")), "{long:?}");
    let errors: Vec<&LoadError> = report.failed.iter().map(|(_, e)| e).collect();
    assert!(
        errors.iter().any(|e| matches!(e, LoadError::Component { path, problem: ComponentError::Invalid { .. } }
            if path.ends_with("broken/broken.wasm"))),
        "{errors:?}"
    );
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(messages.iter().any(|m| m.contains("broken.wasm") && m.contains("not a valid component")), "{messages:?}");
    assert!(
        errors.iter().any(|e| matches!(e, LoadError::Manifest(ManifestError::FolderName { id, .. }) if id == "calc2")),
        "{errors:?}"
    );
    assert!(messages.iter().any(|m| m.contains("named after the plugin's id")), "{messages:?}");
}

#[test]
fn a_version_failing_its_vectors_never_replaces_the_working_one() {
    let (host, dir) = host(&["calc"]);
    let vectors = dir.path().join("calc/tests/vectors.json");
    std::fs::write(
        &vectors,
        r#"[{"tool": "evaluate", "arguments": {"expression": "1+1"}, "expected": {"value": "3", "decimal": "3", "is_integer": true}}]"#,
    )
    .unwrap();
    let manifest = dir.path().join("calc/plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("0.1.0", "0.2.0");
    std::fs::write(&manifest, text).unwrap();
    let err = host.load(&dir.path().join("calc")).unwrap_err();
    assert!(matches!(&err, LoadError::TestVector { index: 0, tool, .. } if tool == "evaluate"), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("vectors.json") && err.contains("test vector 0"), "{err}");
    assert!(host.list_tools().iter().all(|t| t.version == "0.1.0"));
    assert_eq!(host.call_tool_blocking("calc.evaluate", &json!({"expression": "1+1"})).unwrap()["value"], "2");
}

#[tokio::test]
async fn async_calls_run_concurrently_off_the_executor() {
    let (host, _dir) = host(&["calc", "hostile"]);
    let spin = tokio::spawn({
        let host = Arc::clone(&host);
        async move { host.call_tool("hostile.spin", json!({})).await }
    });
    // While one call spins, others complete.
    for i in 0..20 {
        let out = host.call_tool("calc.evaluate", json!({"expression": format!("{i}+1")})).await.unwrap();
        assert_eq!(out["value"], (i + 1).to_string());
    }
    assert!(matches!(spin.await.unwrap(), Err(CallError::Budget { .. })));
}

/// Replaces `dir/calc` with a copy of the installed calc whose manifest has
/// `version` and whose vectors are `vectors` (renamed into place whole).
fn install_calc(dir: &Path, version: &str, vectors: Option<&str>) {
    let stage = dir.join(".calc.stage");
    let _ = std::fs::remove_dir_all(&stage);
    copy_dir(&installed().join("calc"), &stage);
    let manifest = stage.join("plugin.toml");
    let text =
        std::fs::read_to_string(&manifest).unwrap().replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    std::fs::write(&manifest, text).unwrap();
    if let Some(vectors) = vectors {
        std::fs::write(stage.join("tests/vectors.json"), vectors).unwrap();
    }
    let old = dir.join(".calc.old");
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(dir.join("calc"), &old).unwrap();
    std::fs::rename(&stage, dir.join("calc")).unwrap();
    std::fs::remove_dir_all(&old).unwrap();
}

#[test]
fn hot_reload_swaps_versions_under_load_and_holds_back_a_broken_one() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    let (host, dir) = host(&["calc"]);
    let (events, received) = mpsc::channel();
    let _watcher = host.watch(dir.path().to_path_buf(), Duration::from_millis(20), Some(events)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, calls, failures) =
                (Arc::clone(&host), Arc::clone(&stop), Arc::clone(&calls), Arc::clone(&failures));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match host.call_tool_blocking("calc.evaluate", &json!({"expression": "20+22"})) {
                        Ok(out) if out["value"] == "42" => calls.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let next = || received.recv_timeout(Duration::from_secs(30)).expect("a reload event");

    install_calc(dir.path(), "0.2.0", None);
    assert_eq!(next(), engram_plugin_host::ReloadEvent::Loaded { id: "calc".into(), version: "0.2.0".into() });
    assert!(host.list_tools().iter().all(|t| t.version == "0.2.0"));

    let broken = r#"[{"tool": "evaluate", "arguments": {"expression": "1"}, "expected": {"value": "2"}}]"#;
    install_calc(dir.path(), "0.3.0", Some(broken));
    assert!(matches!(next(), engram_plugin_host::ReloadEvent::Rejected { error: LoadError::TestVector { .. }, .. }));
    assert!(host.list_tools().iter().all(|t| t.version == "0.2.0"), "the broken 0.3.0 replaced 0.2.0");

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "calls failed during reloads");
    assert!(calls.load(Ordering::Relaxed) > 0);

    std::fs::remove_dir_all(dir.path().join("calc")).unwrap();
    assert_eq!(next(), engram_plugin_host::ReloadEvent::Removed { id: "calc".into() });
    assert!(host.list_tools().is_empty());
}

#[test]
fn every_expert_loads_with_its_vectors_and_lp_solves_through_the_host() {
    let (host, _dir) = host(&["calc", "lp", "wireless"]);
    // A 1 kHz tone sampled at 8 kHz: a quarter turn every two samples.
    let samples: Vec<Value> = (0..64)
        .map(|k| {
            let phase = 2.0 * std::f64::consts::PI * 1000.0 * f64::from(k) / 8000.0;
            json!([phase.cos(), phase.sin()])
        })
        .collect();
    let out =
        host.call_tool_blocking("wireless.doppler", &json!({"samples": samples, "sample_rate_hz": 8000})).unwrap();
    assert!((out["doppler_hz"].as_f64().unwrap() - 1000.0).abs() < 1e-6, "{out}");
    let model = json!({
        "sense": "maximize", "objective": {"x": 5, "y": 4},
        "variables": {"x": {"lower": 0, "integer": true}, "y": {"lower": 0, "integer": true}},
        "constraints": [{"terms": {"x": 6, "y": 4}, "op": "<=", "rhs": 24}, {"terms": {"x": 1, "y": 2}, "op": "<=", "rhs": 6}]
    });
    let out = host.call_tool_blocking("lp.solve", &json!({"model": model})).unwrap();
    assert_eq!((out["status"].as_str(), out["objective"].as_f64()), (Some("optimal"), Some(20.0)), "{out}");
    let check = host.call_tool_blocking("lp.verify", &json!({"model": model, "values": {"x": 3, "y": 1.5}})).unwrap();
    assert_eq!((check["feasible"].as_bool(), check["optimal"].as_bool()), (Some(false), Some(false)), "{check}");
    let err = host
        .call_tool_blocking("lp.solve", &json!({"model": {"sense": "sideways", "variables": {"x": {}}}}))
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidArguments { .. }), "{err:?}");
}

/// A memory that answers with the caller's own scope, so the test can see
/// recall stays inside it.
struct ScopedNotes;

impl Recall for ScopedNotes {
    fn recall(&self, scope: &Scope, query: &str, limit: u32) -> Result<Vec<Hit>, String> {
        let tenant = scope.tenant.as_deref().unwrap_or("nobody");
        Ok((0..limit.min(2)).map(|i| Hit { text: format!("{tenant}: note {i} on {query}"), score: 0.9 }).collect())
    }
}

/// An HTTP server on 127.0.0.1 answering every request with `pong`.
fn pong_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong");
        }
    });
    port
}

fn failed_with(result: Result<Value, CallError>, needle: &str) {
    match result {
        Err(CallError::ToolFailed { message, .. }) => assert!(message.contains(needle), "{message} lacks {needle}"),
        other => panic!("expected a failure mentioning {needle}, got {other:?}"),
    }
}

#[test]
fn grants_open_directories_hosts_and_memory_and_nothing_works_without_them() {
    let dir = plugins_dir(&["hostile"]);
    let state = tempfile::tempdir().unwrap();
    let grants = Grants::open(state.path().join("plugin-grants.toml")).unwrap();
    let host = PluginHost::with_grants(None, grants).unwrap();
    host.set_recall(Arc::new(ScopedNotes));
    assert!(host.load_dir(dir.path()).failed.is_empty());
    let port = pong_server();
    // `127.0.0.1` is granted bare (ports 80 and 443), `localhost:*` any port.
    let local = format!("http://127.0.0.1:{port}/ping");
    let by_name = format!("http://localhost:{port}/");
    let data = state.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let call = |tool: &str, args: Value| host.call_tool_blocking(&format!("hostile.{tool}"), &args);

    // Requested is not granted.
    failed_with(call("write_file", json!({"path": "/data/out.txt", "text": "x"})), "");
    failed_with(call("fetch", json!({"url": local})), "no `http` grant");
    failed_with(call("recall", json!({"query": "q"})), "no `memory` grant");
    let info = &host.plugins()[0];
    assert_eq!(info.missing.len(), 6, "{info:?}");

    // Every requested directory must be mapped, to a real one, and only those.
    let hostile = dir.path().join("hostile");
    let refused = host.approve(&hostile, &BTreeMap::new(), PrivateAddresses::Refused).unwrap_err();
    assert!(matches!(&refused, ApproveError::UnmappedDirectory { dir, .. } if dir == "data"), "{refused:?}");
    assert!(refused.to_string().contains("--dir data=/absolute/path"), "{refused}");
    let relative = BTreeMap::from([("data".to_owned(), PathBuf::from("data"))]);
    let refused = host.approve(&hostile, &relative, PrivateAddresses::Refused).unwrap_err();
    assert!(matches!(&refused, ApproveError::NotADirectory { dir, .. } if dir == "data"), "{refused:?}");
    let extra = BTreeMap::from([("data".to_owned(), data.clone()), ("etc".to_owned(), PathBuf::from("/etc"))]);
    let refused = host.approve(&hostile, &extra, PrivateAddresses::Refused).unwrap_err();
    assert!(matches!(&refused, ApproveError::UnknownDirectory { dir, .. } if dir == "etc"), "{refused:?}");
    let data_dir = BTreeMap::from([("data".to_owned(), data.clone())]);
    host.approve(&hostile, &data_dir, PrivateAddresses::Refused).unwrap();
    assert!(host.reload(dir.path()).failed.is_empty());
    assert_eq!(call("write_file", json!({"path": "/data/out.txt", "text": "granted"})).unwrap(), "written");
    assert_eq!(std::fs::read_to_string(data.join("out.txt")).unwrap(), "granted");
    assert_eq!(call("read_file", json!({"path": "/data/out.txt"})).unwrap(), "granted");
    for escape in ["/data/../../../../etc/passwd", "/etc/passwd", "../etc/passwd"] {
        failed_with(call("read_file", json!({"path": escape})), "");
    }
    // A write grant has a quota (1 MiB here): a call writes only what is
    // left of it, and a full directory is read-only.
    let quota = |mib| {
        host.grants().update("hostile", |grant| grant.files.get_mut("data").expect("granted").quota_mib = mib).unwrap();
        host.refresh_grants();
    };
    quota(Some(1));
    failed_with(call("write_file", json!({"path": "/data/big.txt", "text": "x".repeat(2 << 20)})), "");
    assert!(std::fs::metadata(data.join("big.txt")).map_or(0, |m| m.len()) <= 1 << 20);
    let _ = std::fs::remove_file(data.join("big.txt"));
    assert_eq!(call("write_file", json!({"path": "/data/small.txt", "text": "fits"})).unwrap(), "written");
    std::fs::write(data.join("filler"), vec![1u8; 1 << 20]).unwrap();
    failed_with(call("write_file", json!({"path": "/data/small.txt", "text": "full"})), "");
    assert_eq!(std::fs::read_to_string(data.join("small.txt")).unwrap(), "fits");
    std::fs::remove_file(data.join("filler")).unwrap();
    // Small files are charged by the blocks they take: 1 MiB holds about
    // 250 one-byte files, not a million.
    let written = (0..300)
        .take_while(|i| call("write_file", json!({"path": format!("/data/f{i}"), "text": "x"})).is_ok())
        .count();
    assert!((200..256).contains(&written), "{written} one-byte files in 1 MiB");
    for i in 0..=written {
        let _ = std::fs::remove_file(data.join(format!("f{i}")));
    }
    quota(None);
    // No symlinks: the host's own tools (an ingest of this directory) would
    // follow one out of it.
    failed_with(call("symlink", json!({"target": "../../../../etc/shadow", "link": "shadow"})), "not-permitted");
    assert!(std::fs::symlink_metadata(data.join("shadow")).is_err(), "a symlink was created");
    // Engram's own directories are never granted.
    let own = state.path().join("own");
    std::fs::create_dir(&own).unwrap();
    let protected = Grants::open(state.path().join("other-grants.toml")).unwrap().protecting([own.clone()]);
    let guarded = PluginHost::with_grants(None, protected).unwrap();
    for path in [own.clone(), state.path().to_path_buf()] {
        let map = BTreeMap::from([("data".to_owned(), path)]);
        let refused = guarded.approve(&hostile, &map, PrivateAddresses::Refused).unwrap_err();
        assert!(matches!(&refused, ApproveError::ProtectedDirectory { .. }), "{refused:?}");
    }
    // Granted hosts are still checked where they lead, on granted ports.
    failed_with(call("fetch", json!({"url": by_name})), "loopback address");
    failed_with(call("fetch", json!({"url": local})), &format!("port {port} of `127.0.0.1` is not granted"));
    failed_with(call("fetch", json!({"url": "http://169.254.169.254/latest/meta-data/"})), "metadata");
    failed_with(call("fetch", json!({"url": "http://10.0.0.1/"})), "private address");
    failed_with(call("fetch", json!({"url": "http://example.com/"})), "not granted");
    failed_with(call("fetch", json!({"url": "file:///etc/passwd"})), "only http and https");
    let scope = Scope { tenant: Some("acme".into()), conversation: None };
    let hits = host.call_tool_blocking_in(&scope, "hostile.recall", &json!({"query": "q"})).unwrap();
    assert_eq!(hits[0]["text"], "acme: note 0 on q");

    // A service on this machine needs `http_private`, for that host only;
    // metadata never opens.
    let unknown = PrivateAddresses::Only(vec!["db.internal".into()]);
    let refused = host.approve(&hostile, &data_dir, unknown).unwrap_err();
    assert!(matches!(&refused, ApproveError::UnknownHost { host, .. } if host == "db.internal"), "{refused:?}");
    host.approve(&hostile, &data_dir, PrivateAddresses::Only(vec!["localhost:*".into()])).unwrap();
    assert!(host.reload(dir.path()).failed.is_empty());
    failed_with(call("fetch", json!({"url": "http://10.0.0.1/"})), "private address");
    assert_eq!(call("fetch", json!({"url": by_name})).unwrap(), json!({"status": 200, "body": "pong"}));
    // A bare host grant never reaches another port (Redis, say), private or not.
    failed_with(call("fetch", json!({"url": local})), "is not granted");
    failed_with(call("fetch", json!({"url": "http://127.0.0.1:6379/"})), "port 6379");
    failed_with(call("fetch", json!({"url": "http://169.254.169.254/"})), "metadata");
    failed_with(call("fetch", json!({"url": by_name, "times": 17})), "request quota");

    // Revoking applies at once, without a reload.
    host.revoke("hostile", &Revocation::All).unwrap();
    failed_with(call("write_file", json!({"path": "/data/out.txt", "text": "x"})), "");
    failed_with(call("fetch", json!({"url": by_name})), "no `http` grant");
    failed_with(call("recall", json!({"query": "q"})), "no `memory` grant");
    // ... and survives a restart: the file says so.
    let text = std::fs::read_to_string(state.path().join("plugin-grants.toml")).unwrap();
    assert!(text.contains("[hostile]") && text.contains("memory = false"), "{text}");
}

/// Replaces `calc`'s folder in `dir` by a copy whose plugin.toml has
/// `capabilities` under `[capabilities]`, and whose component has `from`
/// replaced by `to` (same length): a new version with a reworded tool
/// description.
fn upgrade_calc(dir: &Path, version: &str, capabilities: &str, reword: Option<(&str, &str)>) {
    let stage = dir.join(".calc.stage");
    let _ = std::fs::remove_dir_all(&stage);
    copy_dir(&installed().join("calc"), &stage);
    let path = stage.join("plugin.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
        .replace("[capabilities]\n", &format!("[capabilities]\n{capabilities}\n"));
    std::fs::write(&path, text).unwrap();
    if let Some((from, to)) = reword {
        assert_eq!(from.len(), to.len());
        let wasm = stage.join("calc.wasm");
        let mut bytes = std::fs::read(&wasm).unwrap();
        let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("the text is in the component");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        std::fs::write(&wasm, bytes).unwrap();
    }
    let _ = std::fs::remove_dir_all(dir.join("calc"));
    std::fs::rename(&stage, dir.join("calc")).unwrap();
}

#[test]
fn an_upgrade_asking_for_more_or_rewording_a_tool_is_held_until_approved() {
    let (host, dir) = host(&["calc"]);
    let folder = dir.path().join("calc");
    let version = || host.list_tools()[0].version.clone();
    // First seen: approved automatically (nothing granted), and listed so,
    // with what was approved.
    let approved = host.plugins()[0].approved.clone().expect("an approval");
    assert!(approved.automatic && approved.budgets.is_some_and(|b| b.wall_ms == 1000), "{approved:?}");
    assert_eq!(approved.sha256.as_deref(), host.plugins()[0].sha256.as_deref());

    // Raising its own budgets is asking for more.
    upgrade_calc(dir.path(), "0.1.1", "", None);
    let manifest = folder.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("wall_ms = 1000", "wall_ms = 60000").replace("memory_mib = 32", "memory_mib = 1024"),
    )
    .unwrap();
    match host.load(&folder) {
        Err(LoadError::Held { reasons, .. }) => assert_eq!(
            reasons,
            ["raises its `wall_ms` budget from 1000 to 60000", "raises its `memory_mib` budget from 32 to 1024"]
        ),
        other => panic!("an upgrade raising its budgets loaded: {other:?}"),
    }
    assert_eq!(version(), "0.1.0", "the approved version serves on");

    upgrade_calc(dir.path(), "0.2.0", "http = [\"api.example.com\"]", None);
    match host.load(&folder) {
        Err(LoadError::Held { version, reasons, .. }) => {
            assert_eq!((version.as_str(), reasons), ("0.2.0", vec!["requests HTTP host `api.example.com`".to_owned()]));
        }
        other => panic!("a widening upgrade loaded: {other:?}"),
    }
    assert_eq!(version(), "0.1.0", "the approved version serves on");
    let held = host.plugins()[0].held.clone().expect("listed as held");
    assert_eq!(held.version, "0.2.0");
    host.approve(&folder, &BTreeMap::new(), PrivateAddresses::Refused).unwrap();
    assert_eq!(host.load(&folder).unwrap().1, "0.2.0");
    assert!(host.plugins()[0].held.is_none());
    assert!(!host.plugins()[0].approved.as_ref().unwrap().automatic, "the operator approved it");
    assert_eq!(host.plugins()[0].granted, ["http api.example.com"]);

    // Same capabilities, a reworded description: a tool-poisoning upgrade.
    let reword = ("with fractions instead", "with fractions INSTEAD");
    upgrade_calc(dir.path(), "0.3.0", "http = [\"api.example.com\"]", Some(reword));
    let err = host.load(&folder).unwrap_err();
    assert!(err.is_held(), "{err:?}");
    assert!(err.to_string().contains("changes the description of `calc.evaluate`"), "{err}");
    assert_eq!(version(), "0.2.0");
    // Narrowing is never held.
    upgrade_calc(dir.path(), "0.4.0", "", None);
    assert_eq!(host.load(&folder).unwrap().1, "0.4.0");
    assert!(host.plugins()[0].granted.is_empty(), "{:?}", host.plugins()[0]);
}

#[test]
fn the_template_written_with_attributes_publishes_derived_schemas() {
    let (host, _dir) = host(&["template"]);
    let tools = host.list_tools();
    let greet = &tools[0];
    assert_eq!((greet.name.as_str(), greet.description.as_str()), ("template.greet", "Greets someone by name."));
    assert!(greet.annotations.read_only && greet.annotations.idempotent && !greet.annotations.open_world);
    let name = &greet.input_schema["properties"]["name"];
    assert_eq!((name["type"].as_str(), name["minLength"].as_u64()), (Some("string"), Some(1)), "{name}");
    assert_eq!(name["description"], "Who to greet.", "{}", greet.input_schema);
    assert_eq!(greet.input_schema["additionalProperties"], false);
    assert_eq!(greet.output_schema.as_ref().unwrap()["required"], json!(["greeting"]));
    let out = host.call_tool_blocking("template.greet", &json!({"name": "Ada"})).unwrap();
    assert_eq!(out, json!({"greeting": "Hello, Ada!"}));
    let err = host.call_tool_blocking("template.greet", &json!({"name": "Ada", "shout": true})).unwrap_err();
    assert!(matches!(err, CallError::InvalidArguments { .. }), "{err:?}");
    let err = host.call_tool_blocking("template.greet", &json!({"name": " "})).unwrap_err();
    assert!(matches!(&err, CallError::ToolFailed { kind, .. } if kind == "invalid_arguments"), "{err:?}");
}

/// Test vectors are calls like any other (schemas checked) and bounded in
/// number; a plugin whose vectors break either does not load.
#[test]
fn test_vectors_meet_the_schemas_and_are_bounded() {
    let load = |vectors: &Value| {
        let dir = plugins_dir(&["calc"]);
        std::fs::write(dir.path().join("calc/tests/vectors.json"), vectors.to_string()).unwrap();
        let host = PluginHost::new(None).unwrap();
        let report = host.load_dir(dir.path());
        report.failed.into_iter().map(|(_, err)| err.to_string()).next()
    };
    let two = json!({"value": "2", "decimal": "2", "is_integer": true});
    assert_eq!(load(&json!([{"tool": "evaluate", "arguments": {"expression": "1+1"}, "expected": two}])), None);
    // calc's input schema has additionalProperties: false.
    let extra = json!([{"tool": "evaluate", "arguments": {"expression": "1+1", "extra": true}, "expected": two}]);
    let err = load(&extra).expect("refused");
    assert!(err.contains("test vector 0 (evaluate)") && err.contains("input schema"), "{err}");
    let many: Vec<Value> =
        (0..65).map(|_| json!({"tool": "evaluate", "arguments": {"expression": "1+1"}, "expected": two})).collect();
    let err = load(&Value::Array(many)).expect("refused");
    assert!(err.contains("test vector 64") && err.contains("at most 64"), "{err}");
}

/// Whether `err` is the wall budget running out.
fn out_of_time(err: &CallError) -> bool {
    matches!(err, CallError::Budget { budget, .. } if budget == "wall_ms")
}

#[test]
fn a_guest_waiting_in_a_host_call_is_stopped_at_its_wall_budget() {
    let (host, _dir) = host(&["hostile", "calc"]);
    // Each waits ten minutes unless the host ends the wait at 200 ms.
    for tool in ["sleep", "block", "poll"] {
        let started = std::time::Instant::now();
        let err = hostile(&host, tool, json!({})).unwrap_err();
        assert!(out_of_time(&err), "{tool}: {err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{tool} was not stopped");
    }
    // A wait that ends within the budget still works.
    assert_eq!(hostile(&host, "sleep", json!({"seconds": 0})).unwrap(), json!("slept"));
    // Host memory spent on the guest's behalf is capped: random bytes, and
    // the values a result parses into.
    let err = hostile(&host, "random", json!({"bytes": 64 << 20})).unwrap_err();
    assert!(matches!(&err, CallError::Crashed { message, .. } if message.contains("exceeds limit")), "{err:?}");
    assert_eq!(hostile(&host, "random", json!({"bytes": 1024})).unwrap(), json!(1024));
    let err = hostile(&host, "numbers", json!({})).unwrap_err();
    assert!(matches!(&err, CallError::Budget { budget, .. } if budget == "output_values"), "{err:?}");
    assert_eq!(hostile(&host, "numbers", json!({"count": 3})).unwrap(), json!([0, 0, 0]));
    let out = host.call_tool_blocking("calc.evaluate", &json!({"expression": "6*7"})).unwrap();
    assert_eq!(out["value"], "42");
}

#[test]
fn one_plugin_runs_a_bounded_number_of_calls_and_the_others_keep_answering() {
    let dir = plugins_dir(&["hostile", "calc"]);
    // A budget long enough for the sleepers to be in flight together.
    let manifest = dir.path().join("hostile/plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("wall_ms = 200", "wall_ms = 20000");
    std::fs::write(&manifest, text).unwrap();
    let host = Arc::new(PluginHost::new(None).unwrap());
    assert!(host.load_dir(dir.path()).failed.is_empty());
    let sleepers: Vec<_> = (0..engram_plugin_host::PLUGIN_CALLS)
        .map(|_| {
            let host = Arc::clone(&host);
            // The probe below may take a slot first: try again.
            std::thread::spawn(move || {
                loop {
                    match hostile(&host, "sleep", json!({"seconds": 3})) {
                        Err(CallError::Busy { .. }) => continue,
                        other => return other,
                    }
                }
            })
        })
        .collect();
    // Once all are in flight, one more is refused at once, not queued.
    let busy = loop {
        match hostile(&host, "sleep", json!({"seconds": 0})) {
            Err(err @ CallError::Busy { .. }) => break err,
            Ok(_) if sleepers.iter().any(|s| s.is_finished()) => panic!("never busy"),
            other => assert_eq!(other.unwrap(), json!("slept")),
        }
    };
    assert!(busy.to_string().contains("already runs 16 calls"), "{busy}");
    let out = host.call_tool_blocking("calc.evaluate", &json!({"expression": "6*7"})).unwrap();
    assert_eq!(out["value"], "42");
    for sleeper in sleepers {
        assert_eq!(sleeper.join().unwrap().unwrap(), json!("slept"));
    }
    assert_eq!(hostile(&host, "sleep", json!({"seconds": 0})).unwrap(), json!("slept"));
}

#[test]
fn loading_gives_up_on_a_sleeping_describe_or_vector_a_flood_of_tools_and_a_cyclic_schema() {
    let dir = plugins_dir(&["hostile-sleepy", "hostile-many", "hostile-cyclic", "hostile", "calc"]);
    // A test vector that sleeps.
    let tests = dir.path().join("hostile/tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(tests.join("sleep.json"), r#"[{"tool": "sleep", "arguments": {}, "expected": "slept"}]"#).unwrap();
    let host = Arc::new(PluginHost::new(None).unwrap());
    let started = std::time::Instant::now();
    // In the background: it returns before anything is loaded, and
    // `loaded` waits for the first load.
    let _watcher = host.serve_dir(dir.path().to_path_buf(), std::time::Duration::from_millis(50)).unwrap();
    block_on(host.loaded());
    assert!(!host.is_loading());
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "loading waited on a sleeper");
    let names: Vec<String> = host.list_tools().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["calc.convert", "calc.evaluate"]);
    let report = host.load_dir(dir.path());
    let error = |id: &str| {
        report.failed.iter().find(|(folder, _)| folder.ends_with(id)).map(|(_, e)| e.clone()).expect("failed")
    };
    let sleepy = error("hostile-sleepy");
    assert!(
        matches!(&sleepy, LoadError::Component { problem: ComponentError::Describe { error }, .. } if out_of_time(error)),
        "{sleepy:?}"
    );
    let many = error("hostile-many");
    assert!(
        matches!(&many, LoadError::Component { problem: ComponentError::TooManyTools { count: 5000, max: 64 }, .. }),
        "{many:?}"
    );
    let cyclic = error("hostile-cyclic");
    assert!(
        matches!(&cyclic, LoadError::Component { problem: ComponentError::SchemaInvalid { message, .. }, .. } if message.contains("leads back to itself")),
        "{cyclic:?}"
    );
    let vector = error("hostile");
    assert!(
        matches!(&vector, LoadError::TestVector { tool, message, .. } if tool == "sleep" && message.contains("wall_ms")),
        "{vector:?}"
    );
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// A [`Recall`] that tells the test it was entered, then waits for it.
struct Gate {
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Recall for Gate {
    fn recall(&self, _: &Scope, _: &str, _: u32) -> Result<Vec<Hit>, String> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        Ok(Vec::new())
    }
}

#[test]
fn a_revocation_landing_while_a_version_is_tested_applies_to_it() {
    let dir = plugins_dir(&["hostile"]);
    let folder = dir.path().join("hostile");
    let manifest = folder.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("wall_ms = 200", "wall_ms = 30000");
    std::fs::write(&manifest, text).unwrap();
    // Its test vector recalls: the gate holds the load there.
    std::fs::create_dir_all(folder.join("tests")).unwrap();
    std::fs::write(
        folder.join("tests/recall.json"),
        r#"[{"tool": "recall", "arguments": {"query": "q"}, "expected": []}]"#,
    )
    .unwrap();
    let host = Arc::new(PluginHost::new(None).unwrap());
    let (entered, on_entry) = std::sync::mpsc::channel();
    let (release, on_release) = std::sync::mpsc::channel();
    host.set_recall(Arc::new(Gate { entered: entered.into(), release: on_release.into() }));
    host.grants().update("hostile", |grant| grant.memory = true).unwrap();
    let loading = {
        let (host, folder) = (Arc::clone(&host), folder.clone());
        std::thread::spawn(move || host.load(&folder))
    };
    on_entry.recv().unwrap();
    host.revoke("hostile", &Revocation::All).unwrap();
    release.send(()).unwrap();
    assert_eq!(loading.join().unwrap().unwrap().0, "hostile");
    // The new version serves without what was revoked while it was tested.
    release.send(()).unwrap();
    failed_with(hostile(&host, "recall", json!({"query": "q"})), "no `memory` grant");
    assert!(host.plugins()[0].granted.is_empty(), "{:?}", host.plugins()[0]);
}
