//! Layering and error reporting of the configuration.

use std::path::PathBuf;

use engram_config::{ConfigError, HostEnv, KEYS, Loader, Origin, Paths, ProblemKind, Synchronous};

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(err: ConfigError) -> Vec<engram_config::Problem> {
    match err {
        ConfigError::Problems(problems) => problems,
        other => panic!("expected key problems, got {other}"),
    }
}

#[test]
fn builtin_defaults_load_and_document_every_key() {
    let loaded = Loader::new().load().expect("built-in defaults are valid");
    assert_eq!(loaded.config.storage.synchronous, Synchronous::Full);
    assert_eq!(loaded.sources, vec![Origin::Builtin]);
    // Every documented key appears in default.toml, set or commented out.
    for doc in KEYS {
        let leaf = doc.key.rsplit('.').next().unwrap();
        // Keys of sub-tables are documented under their `[a.b]` header.
        assert!(
            engram_config::DEFAULT_TOML.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{leaf} =")) || l.starts_with(&format!("{leaf}="))
            }),
            "{} is not documented in config/default.toml",
            doc.key
        );
    }
}

#[test]
fn file_then_env_then_override_win_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[server]\nmax_connections = 10\nbody_timeout_ms = 5000\n[log]\nlevel = \"debug\"\n");
    let loaded = Loader::new()
        .file(&file, true)
        .env_vars([
            ("ENGRAM_SERVER__MAX_CONNECTIONS".to_owned(), "20".to_owned()),
            ("ENGRAM_TEST_SOMETHING".to_owned(), "not config".to_owned()),
            ("OTHER__THING".to_owned(), "x".to_owned()),
        ])
        .set("log.level", "trace", Origin::Cli("--verbose"))
        .load()
        .unwrap();
    assert_eq!(loaded.config.server.max_connections, 20);
    assert_eq!(loaded.config.server.body_timeout_ms, 5000);
    assert_eq!(loaded.config.log.level, "trace");
    assert_eq!(loaded.origin_of("server.body_timeout_ms"), &Origin::File(file));
    assert_eq!(loaded.origin_of("server.max_connections"), &Origin::Env("ENGRAM_SERVER__MAX_CONNECTIONS".into()));
    assert_eq!(loaded.origin_of("server.header_timeout_ms"), &Origin::Builtin);
}

#[test]
fn unknown_key_in_file_names_key_file_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[server]\nmax_conections = 10\n[bogus]\nx = 1\n");
    let err = Loader::new().file(&file, true).load().unwrap_err();
    let text = err.to_string();
    let problems = problems(err);
    assert_eq!(problems.len(), 2, "{text}");
    assert!(text.contains("server.max_conections"), "{text}");
    assert!(text.contains("did you mean `server.max_connections`"), "{text}");
    assert!(text.contains("bogus"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(matches!(problems[0].kind, ProblemKind::UnknownKey { .. }));
}

#[test]
fn wrong_type_names_key_file_and_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[server]\nmax_body_bytes = \"lots\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("key `server.max_body_bytes`"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("expected an integer number of bytes"), "{text}");
}

#[test]
fn bad_enum_and_bad_address_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[storage]\nsynchronous = \"fast\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("storage.synchronous") && text.contains("\"full\" or \"normal\""), "{text}");

    let file = write(&dir, "[retrieval]\nfusion = \"max\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("retrieval.fusion") && text.contains("\"normalized\" or \"rrf\""), "{text}");
    let file = write(&dir, "[retrieval]\nchunk_tokens = 100\nchunk_overlap = 60\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("retrieval.chunk_overlap") && text.contains("60 is out of range"), "{text}");
    let file = write(&dir, "[retrieval]\nvector_store = \"milvus\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("retrieval.vector_store") && text.contains("\"edge\" or \"qdrant\""), "{text}");
    let file = write(&dir, "[retrieval.qdrant]\nurl = \"localhost:6334\"\ncollection_prefix = \"a/b\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("retrieval.qdrant.url") && text.contains("not an http(s) URL"), "{text}");
    assert!(text.contains("retrieval.qdrant.collection_prefix") && text.contains("letters, digits"), "{text}");
    let file =
        write(&dir, "[retrieval]\nvector_store = \"qdrant\"\n[retrieval.qdrant]\nurl = \"https://q.example:6334\"\n");
    let loaded = Loader::new().file(&file, true).load().unwrap();
    assert_eq!(loaded.config.retrieval.vector_store, engram_config::VectorStoreKind::Qdrant);
    assert_eq!(loaded.config.retrieval.qdrant.collection_prefix, "engram");

    let file = write(&dir, "[server]\ntcp = \"localhost\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("key `server.tcp`") && text.contains("loopback address with a port"), "{text}");
}

#[test]
fn invalid_values_are_all_reported_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "[server]\ntcp = \"0.0.0.0:8080\"\nmax_connections = 0\nallowed_origins = [\"localhost:3000\"]\n\
         [storage]\ndata_dir = \"relative/dir\"\n",
    );
    let err = Loader::new()
        .file(&file, true)
        .env_vars([("ENGRAM_SERVER__HEADER_TIMEOUT_MS".to_owned(), "5".to_owned())])
        .load()
        .unwrap_err();
    let text = err.to_string();
    let problems = problems(err);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in ["server.tcp", "server.max_connections", "server.allowed_origins", "storage.data_dir"] {
        assert!(keys.contains(&key), "{key} missing from {text}");
    }
    let env = problems.iter().find(|p| p.key == "server.header_timeout_ms").expect(&text);
    assert_eq!(env.origin, Origin::Env("ENGRAM_SERVER__HEADER_TIMEOUT_MS".into()));
    assert!(text.contains("environment variable ENGRAM_SERVER__HEADER_TIMEOUT_MS"), "{text}");
    assert!(text.contains("0.0.0.0:8080 is not a loopback address"), "{text}");
}

#[test]
fn unknown_env_key_names_the_variable() {
    let text = Loader::new()
        .env_vars([("ENGRAM_SERVR__TCP".to_owned(), "127.0.0.1:1".to_owned())])
        .load()
        .unwrap_err()
        .to_string();
    assert!(text.contains("environment variable ENGRAM_SERVR__TCP") && text.contains("servr.tcp"), "{text}");
}

#[test]
fn env_values_parse_as_toml_where_they_can() {
    let loaded = Loader::new()
        .env_vars([
            ("ENGRAM_SERVER__ALLOWED_ORIGINS".to_owned(), r#"["http://localhost:3000"]"#.to_owned()),
            ("ENGRAM_SERVER__TCP".to_owned(), "127.0.0.1:8765".to_owned()),
        ])
        .load()
        .unwrap();
    assert_eq!(loaded.config.server.allowed_origins, vec!["http://localhost:3000".to_owned()]);
    assert_eq!(loaded.config.server.tcp, Some("127.0.0.1:8765".parse().unwrap()));
}

#[test]
fn syntax_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "[server]\ntcp = \n");
    let err = Loader::new().file(&file, true).load().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    assert!(text.contains(&file.display().to_string()) && text.contains("line 2"), "{text}");
}

#[test]
fn missing_required_file_is_an_error_and_optional_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Loader::new().file(&missing, true).load().unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
    let loaded = Loader::new().file(&missing, false).load().unwrap();
    assert_eq!(loaded.sources, vec![Origin::Builtin]);
}

#[test]
fn paths_follow_xdg_and_fall_back_under_the_data_dir() {
    let config = Loader::new().load().unwrap().config;
    let env =
        HostEnv { home: Some("/home/u".into()), xdg_runtime_dir: Some("/run/user/7".into()), ..HostEnv::default() };
    let paths = Paths::resolve(&config, &env).unwrap();
    assert_eq!(paths.data_dir, PathBuf::from("/home/u/.local/share/engram"));
    assert_eq!(paths.socket, PathBuf::from("/run/user/7/engram/engram.sock"));
    assert_eq!(paths.models_dir, PathBuf::from("/home/u/.local/share/engram/models"));

    let env = HostEnv { home: Some("/home/u".into()), ..HostEnv::default() };
    let paths = Paths::resolve(&config, &env).unwrap();
    assert_eq!(paths.socket, PathBuf::from("/home/u/.local/share/engram/engram.sock"));

    let err = Paths::resolve(&config, &HostEnv::default()).unwrap_err();
    assert!(err.to_string().contains("storage.data_dir"), "{err}");
}

#[test]
fn home_relative_paths_expand() {
    let loaded = Loader::new().set("storage.data_dir", "~/engram-data", Origin::Cli("--data-dir")).load().unwrap();
    let env = HostEnv { home: Some("/home/u".into()), ..HostEnv::default() };
    let paths = Paths::resolve(&loaded.config, &env).unwrap();
    assert_eq!(paths.data_dir, PathBuf::from("/home/u/engram-data"));
}

#[test]
fn plugin_grants_are_tables_whose_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "[plugins.grants.weather]\nhttp = [\"api.weather.gov\"]\nfiles = { cache = { path = \"/srv/w\", mode = \"write\" } }\n",
    );
    let loaded = Loader::new().file(&file, true).load().unwrap();
    let grant = &loaded.config.plugins.grants["weather"];
    assert_eq!(grant.http, ["api.weather.gov"]);
    assert_eq!(grant.files["cache"].mode, engram_config::DirMode::Write);
    assert!(!grant.memory && grant.http_requests.is_none());

    let file = write(&dir, "[plugins.grants.weather]\nhtp = [\"api.weather.gov\"]\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("plugins.grants.weather.htp") && text.contains(&file.display().to_string()), "{text}");
    let file = write(&dir, "[plugins.grants.weather.files.cache]\npath = \"/srv\"\nmode = \"rw\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("plugins.grants.weather.files.cache.mode") && text.contains("a plugin grant"), "{text}");
    let file = write(&dir, "[plugins.grants.weather.files.cache]\npath = \"srv\"\nmode = \"read\"\n");
    let text = Loader::new().file(&file, true).load().unwrap_err().to_string();
    assert!(text.contains("weather.files.cache.path") && text.contains("relative path"), "{text}");
}

#[test]
fn memory_values_out_of_range_or_missing_a_placeholder_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "[memory]\nbudget_tokens = 100\nhalf_life_turns = 0\ncapacity = 200000000\n\
         summary_prompt = \"Summarize: {turns}\"\n",
    );
    let err = Loader::new().file(&file, true).load().unwrap_err();
    let text = err.to_string();
    let keys: Vec<String> = problems(err).into_iter().map(|p| p.key).collect();
    for key in ["memory.budget_tokens", "memory.half_life_turns", "memory.capacity", "memory.summary_prompt"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {text}");
    }
    assert!(text.contains("{summary}") && text.contains("config.toml"), "{text}");
}

#[test]
fn certificate_shares_out_of_range_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (body, key) in [
        ("stale_share = 1.5", "retrieval.stale_share"),
        ("stale_share = -0.1", "retrieval.stale_share"),
        ("pac_delta = 0.0", "retrieval.pac_delta"),
        ("pac_delta = 0.5", "retrieval.pac_delta"),
    ] {
        let file = write(&dir, &format!("[retrieval]\n{body}\n"));
        let err = Loader::new().file(&file, true).load().unwrap_err();
        let text = err.to_string();
        let keys: Vec<String> = problems(err).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, [key], "{text}");
        assert!(text.contains("config.toml") && text.contains("out of range"), "{text}");
    }
    let file = write(&dir, "[retrieval]\nstale_share = 0\npac_delta = 0.01\n");
    let loaded = Loader::new().file(&file, true).load().unwrap();
    assert_eq!((loaded.config.retrieval.stale_share, loaded.config.retrieval.pac_delta), (0.0, 0.01));
}
