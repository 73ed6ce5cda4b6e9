//! The daemon's plugin tools end to end: real components built from
//! `plugins/`, served by `engram serve`, called over HTTP and with
//! `engram plugins`.

mod support;

use hyper::StatusCode;
use serde_json::{Value, json};
use support::{Sandbox, get_unix, post_json};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn tools_are_listed_and_called_over_http_and_the_cli() {
    let sandbox = Sandbox::new();
    let plugins = support::plugins_dir().to_str().unwrap().to_owned();
    let env = [("ENGRAM_PLUGINS__DIR", plugins.as_str())];
    let daemon = sandbox.start(&env);
    let socket = sandbox.socket();

    let reply = get_unix(&socket, "/v1/plugins/tools");
    assert_eq!(reply.status, StatusCode::OK);
    let names: Vec<String> =
        reply.json()["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
    assert!(names.contains(&"calc.evaluate".to_owned()) && names.contains(&"hostile.spin".to_owned()), "{names:?}");

    let reply = post_json(
        &socket,
        "/v1/plugins/call",
        &json!({"tool": "calc.evaluate", "arguments": {"expression": "2^10 / 3"}}),
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["result"]["value"], "1024/3");

    // Structured errors with meaningful statuses.
    let reply =
        post_json(&socket, "/v1/plugins/call", &json!({"tool": "calc.evaluate", "arguments": {"expression": 1}}));
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["error"]["detail"]["error"], "invalid_arguments");
    let reply = post_json(&socket, "/v1/plugins/call", &json!({"tool": "hostile.spin"}));
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail: Value = reply.json()["error"]["detail"].clone();
    assert_eq!(
        (detail["error"].as_str(), detail["budget"].as_str(), detail["limit"].as_u64()),
        (Some("budget"), Some("wall_ms"), Some(200))
    );
    let reply = post_json(&socket, "/v1/plugins/call", &json!({"tool": "nope.nothing"}));
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = post_json(&socket, "/v1/plugins/call", &json!({"tool": 5}));
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // The CLI uses the same route.
    let output = sandbox.run(&["plugins", "list"], &env);
    assert!(output.status.success() && stdout(&output).contains("calc.convert"), "{output:?}");
    let output = sandbox.run(&["plugins", "call", "calc.convert", r#"{"value": 100, "from": "C", "to": "F"}"#], &env);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(serde_json::from_str::<Value>(&stdout(&output)).unwrap()["value"], "212");
    let output = sandbox.run(&["plugins", "call", "hostile.allocate"], &env);
    assert!(!output.status.success());
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(
        (error["code"].as_str(), error["detail"]["budget"].as_str()),
        (Some("budget_exceeded"), Some("memory_mib"))
    );

    // Info, reload, and the offline test runner.
    let output = sandbox.run(&["plugins", "info", "calc"], &env);
    let info: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(info.as_array().map(Vec::len), Some(2), "{info}");
    assert!(info[0]["input_schema"]["properties"].is_object());
    let output = sandbox.run(&["plugins", "info", "calc.nothing"], &env);
    assert!(!output.status.success());
    // The fixtures include a plugin the host refuses (a tool description
    // over the limit): reload reports it and exits non-zero; the rest serve.
    let output = sandbox.run(&["plugins", "reload"], &env);
    let text = stdout(&output);
    assert!(!output.status.success() && text.contains("loaded  calc 0.1.0"), "{output:?}");
    assert!(text.contains("FAILED") && text.contains("description longer than 4096"), "{output:?}");
    let calc = support::plugins_dir().join("calc");
    let output = sandbox.run(&["plugins", "test", calc.to_str().unwrap()], &[]);
    assert!(output.status.success() && stdout(&output).starts_with("PASS  calc"), "{output:?}");
    let broken = sandbox.path().join("broken/calc");
    std::fs::create_dir_all(broken.join("tests")).unwrap();
    for file in ["plugin.toml", "calc.wasm"] {
        std::fs::copy(calc.join(file), broken.join(file)).unwrap();
    }
    std::fs::write(
        broken.join("tests/v.json"),
        r#"[{"tool": "evaluate", "arguments": {"expression": "1"}, "expected": {"value": "2"}}]"#,
    )
    .unwrap();
    let output = sandbox.run(&["plugins", "test", broken.to_str().unwrap()], &[]);
    assert!(!output.status.success() && stdout(&output).contains("test vector 0"), "{output:?}");

    // And the daemon is still serving.
    assert_eq!(get_unix(&socket, "/healthz").status, StatusCode::OK);
    drop(daemon);
}

#[test]
fn a_plugin_dropped_into_the_directory_is_served_without_a_restart() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let env = [("ENGRAM_PLUGINS__DIR", plugins.to_str().unwrap())];
    let daemon = sandbox.start(&env);
    let socket = sandbox.socket();
    assert_eq!(get_unix(&socket, "/v1/plugins/tools").json()["tools"], json!([]));

    // Install the way scripts/build-plugins does: stage hidden, rename in.
    support::copy_dir(&support::plugins_dir().join("calc"), &plugins.join(".calc.stage"));
    std::fs::rename(plugins.join(".calc.stage"), plugins.join("calc")).unwrap();
    daemon.wait_for_log("plugin reloaded", std::time::Duration::from_secs(30));
    let tools = get_unix(&socket, "/v1/plugins/tools").json()["tools"].clone();
    assert_eq!(tools.as_array().map(Vec::len), Some(2), "{tools}");
    let reply =
        post_json(&socket, "/v1/plugins/call", &json!({"tool": "calc.evaluate", "arguments": {"expression": "3*3"}}));
    assert_eq!(reply.json()["result"]["value"], "9");
    drop(daemon);
}

/// Installs a copy of calc at `version` requesting `capabilities`, the way
/// scripts/build-plugins does (staged hidden, renamed in).
fn install_calc(plugins: &std::path::Path, version: &str, capabilities: &str) {
    let stage = plugins.join(".calc.stage");
    support::copy_dir(&support::plugins_dir().join("calc"), &stage);
    let manifest = stage.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""))
        .replace("[capabilities]\n", &format!("[capabilities]\n{capabilities}\n"));
    std::fs::write(&manifest, text).unwrap();
    let _ = std::fs::remove_dir_all(plugins.join("calc"));
    std::fs::rename(&stage, plugins.join("calc")).unwrap();
}

#[test]
fn an_upgrade_asking_for_more_is_held_until_the_operator_grants_it() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install_calc(&plugins, "0.1.0", "");
    let env = [("ENGRAM_PLUGINS__DIR", plugins.to_str().unwrap())];
    let mut daemon = sandbox.start(&env);
    let socket = sandbox.socket();
    let calc = || {
        let plugins = get_unix(&socket, "/v1/plugins").json()["plugins"].clone();
        plugins.as_array().unwrap().iter().find(|p| p["id"] == "calc").cloned().unwrap()
    };
    assert_eq!(calc()["version"], "0.1.0");
    // Seen for the first time: published with nothing granted, and said so.
    assert_eq!(calc()["approved"]["automatic"], true);
    let text = stdout(&sandbox.run(&["plugins", "list"], &env));
    assert!(text.contains("NOT REVIEWED"), "{text}");

    install_calc(&plugins, "0.2.0", "http = [\"api.example.com\"]");
    daemon.wait_for_log("is held until approved", std::time::Duration::from_secs(30));
    assert_eq!((calc()["version"].as_str(), calc()["held"]["version"].as_str()), (Some("0.1.0"), Some("0.2.0")));
    let output = sandbox.run(&["plugins", "list"], &env);
    let text = stdout(&output);
    assert!(text.contains("calc 0.1.0") && text.contains("HELD 0.2.0") && text.contains("api.example.com"), "{text}");
    let reply =
        post_json(&socket, "/v1/plugins/call", &json!({"tool": "calc.evaluate", "arguments": {"expression": "1+1"}}));
    assert_eq!(reply.json()["result"]["value"], "2", "the approved version serves on");

    let output = sandbox.run(&["plugins", "grant", "calc"], &env);
    assert!(output.status.success() && stdout(&output).contains("approved calc 0.2.0"), "{output:?}");
    assert!(stdout(&output).contains("the running daemon applied it"), "{output:?}");
    assert_eq!(
        (calc()["version"].as_str(), calc()["granted"].clone()),
        (Some("0.2.0"), json!(["http api.example.com"]))
    );
    assert!(calc()["held"].is_null());
    assert!(calc()["approved"]["automatic"].is_null(), "approved by the operator now");
    assert!(!stdout(&sandbox.run(&["plugins", "list"], &env)).contains("NOT REVIEWED"));

    let output = sandbox.run(&["plugins", "revoke", "calc", "--http", "api.example.com"], &env);
    assert!(output.status.success(), "{output:?}");
    assert_eq!((calc()["granted"].clone(), calc()["missing"].clone()), (json!([]), json!(["http api.example.com"])));

    // The approval outlives the daemon: 0.2.0 loads at once after a restart.
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit(std::time::Duration::from_secs(30));
    let mut daemon = sandbox.start(&env);
    assert_eq!(calc()["version"], "0.2.0");
    assert_eq!(calc()["granted"], json!([]));

    // Grants declared in the configuration add to the file's; the CLI
    // cannot revoke those and says where they come from.
    let config = sandbox.path().join("config/engram/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[plugins.grants.calc]\nhttp = [\"api.example.com\"]\n").unwrap();
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit(std::time::Duration::from_secs(30));
    let daemon = sandbox.start(&env);
    assert_eq!(calc()["granted"], json!(["http api.example.com"]));
    let output = sandbox.run(&["plugins", "revoke", "calc"], &env);
    assert!(stdout(&output).contains("[plugins.grants.calc]"), "{output:?}");
    assert_eq!(calc()["granted"], json!(["http api.example.com"]));
    drop(daemon);

    // A grants file that does not parse stops the start, naming file and key.
    let grants = sandbox.data_dir().join("plugin-grants.toml");
    let text = std::fs::read_to_string(&grants).unwrap();
    std::fs::write(&grants, text.replace("memory = false", "memroy = false")).unwrap();
    let mut daemon = sandbox.spawn(&env);
    assert!(!daemon.wait_exit(std::time::Duration::from_secs(30)).success());
    let log = daemon.stderr();
    assert!(log.contains("plugin-grants.toml") && log.contains("memroy"), "{log}");
}

#[test]
fn the_daemon_serves_while_a_plugin_takes_its_time_to_load() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // A plugin whose describe sleeps, with a minute's budget to do it in.
    let sleepy = plugins.join("hostile-sleepy");
    support::copy_dir(&support::plugins_dir().join("hostile-sleepy"), &sleepy);
    let manifest = sleepy.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("wall_ms = 200", "wall_ms = 60000");
    std::fs::write(&manifest, text).unwrap();
    let env = [("ENGRAM_PLUGINS__DIR", plugins.to_str().unwrap())];
    let daemon = sandbox.start(&env);
    // Ready and answering while the plugin is still being described.
    let reply = get_unix(&sandbox.socket(), "/healthz");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!daemon.stderr().contains("plugins loaded"), "{}", daemon.stderr());
    drop(daemon);
}

#[test]
fn engrams_own_files_are_never_granted() {
    let sandbox = Sandbox::new();
    let plugins = sandbox.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    support::copy_dir(&support::plugins_dir().join("hostile"), &plugins.join("hostile"));
    // The user's configuration file: writing it would grant a plugin anything.
    let config_dir = sandbox.path().join("config/engram");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("config.toml"), "[log]\nlevel = \"info\"\n").unwrap();
    std::fs::create_dir_all(sandbox.data_dir()).unwrap();
    let env = [("ENGRAM_PLUGINS__DIR", plugins.to_str().unwrap())];
    for dir in [config_dir, sandbox.data_dir(), plugins.clone()] {
        let map = format!("data={}", dir.display());
        let output = sandbox.run(&["plugins", "grant", "hostile", "--dir", &map], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("overlaps Engram's own"), "{}: {stderr}", dir.display());
    }
    let notes = sandbox.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    let map = format!("data={}", notes.display());
    let output = sandbox.run(&["plugins", "grant", "hostile", "--dir", &map], &env);
    assert!(output.status.success(), "{output:?}");
}
