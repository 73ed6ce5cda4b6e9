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

    // And the daemon is still serving.
    assert_eq!(get_unix(&socket, "/healthz").status, StatusCode::OK);
    drop(daemon);
}
