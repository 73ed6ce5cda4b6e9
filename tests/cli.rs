//! End-to-end: the `engram` command line (version, configuration errors,
//! doctor, refusing a journal it must not touch).

mod support;

use std::path::Path;

use support::Sandbox;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let output = std::process::Command::new(support::BIN).arg("version").output().unwrap();
    assert!(output.status.success());
    assert!(stdout(&output).starts_with(&format!("engram {}", env!("CARGO_PKG_VERSION"))));
    let output = std::process::Command::new(support::BIN).args(["version", "--json"]).output().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["journal_schema"], engram_store::SCHEMA_VERSION);
}

#[test]
fn a_bad_config_file_stops_serve_with_the_key_the_file_and_the_form() {
    let sandbox = Sandbox::new();
    let cases = [
        ("[server]\nmax_conections = 10\n", "server.max_conections", "did you mean `server.max_connections`"),
        ("[server]\nmax_body_bytes = \"big\"\n", "server.max_body_bytes", "an integer number of bytes"),
        ("[server]\ntcp = \"10.0.0.1:8080\"\n", "server.tcp", "is not a loopback address"),
        ("[storage]\nsynchronous = \"sometimes\"\n", "storage.synchronous", "\"full\" or \"normal\""),
        ("[log]\nformat = \"xml\"\n", "log.format", "\"human\" or \"json\""),
    ];
    for (text, key, phrase) in cases {
        let file = sandbox.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let output = sandbox.run(&["serve", "--config", file.to_str().unwrap()], &[]);
        assert_eq!(output.status.code(), Some(2), "{text}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains(key) && err.contains(phrase), "{text}: {err}");
        assert!(err.contains(&file.display().to_string()), "{text}: {err}");
        assert!(!sandbox.socket().exists());
    }
}

#[test]
fn a_bad_environment_variable_is_named() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["serve"], &[("ENGRAM_SERVER__MAX_CONNECTIONS", "lots")]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("environment variable ENGRAM_SERVER__MAX_CONNECTIONS"), "{err}");
    assert!(err.contains("server.max_connections"), "{err}");
}

#[test]
fn the_default_user_config_file_is_read() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("config").join("engram").join("config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "[log]\nlevel = \"[[[\"\n").unwrap();
    let output = sandbox.run(&["serve"], &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("log.level") && err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["serve", "--config", "/nonexistent/engram.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/engram.toml"), "{}", stderr(&output));
}

#[test]
fn serve_refuses_a_journal_from_a_newer_engram_and_leaves_it_alone() {
    let sandbox = Sandbox::new();
    let journal = sandbox.data_dir().join("journal.sqlite3");
    drop(engram_store::Store::open(&journal, &Default::default()).unwrap());
    {
        let conn = engram_store::rusqlite::Connection::open(&journal).unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
    }
    let before = std::fs::read(&journal).unwrap();
    let output = sandbox.run(&["serve"], &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("schema version 999") && err.contains("upgrade engram"), "{err}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
    assert!(!sandbox.socket().exists());
}

/// A tiny but well-formed safetensors file.
fn write_safetensors(path: &Path) {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(path, bytes).unwrap();
}

/// A GGUF v3 header declaring one tensor and no metadata.
fn write_gguf(path: &Path) {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn install_models(models: &Path) {
    let embedder = models.join("all-MiniLM-L6-v2");
    std::fs::create_dir_all(&embedder).unwrap();
    std::fs::write(embedder.join("config.json"), r#"{"hidden_size": 384}"#).unwrap();
    std::fs::write(embedder.join("tokenizer.json"), r#"{"model": {}}"#).unwrap();
    write_safetensors(&embedder.join("model.safetensors"));
    let llm = models.join("SmolLM2-135M-Instruct");
    std::fs::create_dir_all(&llm).unwrap();
    write_gguf(&llm.join("SmolLM2-135M-Instruct.Q4_1.gguf"));
}

#[test]
fn doctor_fails_on_missing_models_with_a_fix_and_passes_once_they_are_there() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["doctor"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let table = stdout(&output);
    assert!(table.contains("embedder  FAIL") && table.contains("fix: run scripts/fetch-models"), "{table}");
    assert!(table.contains("journal   PASS") && table.contains("SQLite 3."), "{table}");

    // With the real models in place, both load.
    let models = support::models_dir();
    let output = sandbox.run(&["doctor"], &[("ENGRAM_MODELS__DIR", models.to_str().unwrap())]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}");
    assert!(table.contains("loads and embeds (384-d") && table.contains("all checks passed"), "{table}");
    // The default model runs on the native CPU engine, in its own Q4_1 blocks;
    // candle, when asked for, runs a converted Q8_0 copy.
    assert!(table.contains("native engine") && !table.contains("converted"), "{table}");
    let models_env = ("ENGRAM_MODELS__DIR", models.to_str().unwrap());
    let output = sandbox.run(&["doctor"], &[models_env, ("ENGRAM_MODELS__LLM__CPU_ENGINE", "candle")]);
    let table = stdout(&output);
    assert!(table.contains("candle engine, converted to Q8_0 and cached"), "{table}");
}

#[test]
fn doctor_names_a_truncated_model_and_a_corrupt_journal() {
    let sandbox = Sandbox::new();
    let models = sandbox.data_dir().join("models");
    install_models(&models);
    let weights = models.join("all-MiniLM-L6-v2").join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 4]).unwrap();
    std::fs::write(models.join("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"), b"GGML....").unwrap();
    std::fs::write(sandbox.data_dir().join("journal.sqlite3"), vec![7u8; 4096]).unwrap();

    let output = sandbox.run(&["doctor", "--json"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let check = |name: &str| report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(check("embedder")["status"], "fail");
    assert!(check("embedder")["detail"].as_str().unwrap().contains("truncated"), "{report:#}");
    assert!(check("llm")["detail"].as_str().unwrap().contains("not a readable GGUF file"), "{report:#}");
    assert!(check("journal")["detail"].as_str().unwrap().contains("not an SQLite database"), "{report:#}");
}

#[test]
fn doctor_reports_a_running_daemon_and_bad_config() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start(&[]);
    let table = stdout(&sandbox.run(&["doctor"], &[]));
    assert!(table.contains("a daemon is running and healthy"), "{table}");

    let output = sandbox.run(&["doctor"], &[("ENGRAM_SERVER__TCP", "8.8.8.8:53")]);
    assert_eq!(output.status.code(), Some(1));
    let table = stdout(&output);
    assert!(table.contains("config") && table.contains("server.tcp") && table.contains("FAIL"), "{table}");

    // The embedded vector store needs nothing; a Qdrant server that does
    // not answer is named, with the key to fix.
    let line = |table: &str| table.lines().find(|l| l.starts_with("vectors ")).unwrap_or_default().to_owned();
    assert!(line(&table).contains("PASS    qdrant-edge, embedded"), "{table}");
    let server =
        [("ENGRAM_RETRIEVAL__VECTOR_STORE", "qdrant"), ("ENGRAM_RETRIEVAL__QDRANT__URL", "http://127.0.0.1:9")];
    let output = sandbox.run(&["doctor"], &server);
    assert_eq!(output.status.code(), Some(1));
    let table = stdout(&output);
    assert!(line(&table).contains("FAIL    vector store: reaching the server"), "{table}");
    assert!(table.contains("127.0.0.1:9") && table.contains("retrieval.qdrant.url"), "{table}");
}
