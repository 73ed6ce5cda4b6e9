//! End-to-end: retrieval through the real `engram` binary with the real
//! embedder — the CLI on a stopped data directory, then the daemon's HTTP
//! routes (and the CLI forwarding to them), then `engram eval retrieval`
//! on a small BEIR-layout folder.

mod support;

use std::path::Path;

use hyper::StatusCode;
use serde_json::{Value, json};
use support::{Sandbox, get_unix, post_json};

fn models_env() -> Vec<(&'static str, String)> {
    vec![("ENGRAM_MODELS__DIR", support::models_dir().display().to_string())]
}

fn run(sandbox: &Sandbox, args: &[&str]) -> (bool, String, String) {
    let env = models_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sandbox.run(args, &env);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run(sandbox, args);
    assert!(ok, "engram {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("engram {args:?} printed no JSON ({e}): {stdout}"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const TOPICS: [(&str, &str, &str); 8] = [
    ("volcano.md", "# Volcanoes\n\nVolcanoes erupt when magma rises through the crust.", "What makes magma erupt?"),
    (
        "whale.md",
        "# Whales\n\nBlue whales are the largest animals that ever lived.",
        "Which animal is the biggest ever?",
    ),
    ("piano.txt", "A piano makes sound when hammers strike its strings.", "How does a piano produce sound?"),
    ("desert.txt", "The Sahara is the largest hot desert on Earth.", "Where is the largest hot desert?"),
    ("vaccine.md", "Vaccines train the immune system to recognise a pathogen.", "How do vaccines work?"),
    ("glacier.txt", "Glaciers form where snow accumulates faster than it melts.", "How are glaciers formed?"),
    ("bread.md", "Yeast makes bread rise by releasing carbon dioxide.", "Why does bread rise?"),
    ("comet.txt", "Comets grow tails of gas and dust near the Sun.", "Why do comets have tails?"),
];

#[test]
fn cli_ingests_searches_calibrates_and_reindexes() {
    let sandbox = Sandbox::new();
    let docs = sandbox.path().join("docs");
    for (name, text, _) in TOPICS {
        write(&docs.join(name), text);
    }
    write(&docs.join("image.bin"), "\u{0}\u{0}");
    let docs_arg = docs.to_str().unwrap();

    let report = ok_json(&sandbox, &["ingest", docs_arg, "--collection", "facts", "--json"]);
    assert_eq!(report["added"], 8, "{report}");
    assert_eq!(report["skipped"][0]["reason"].as_str().map(|r| r.contains("unsupported")), Some(true), "{report}");
    let again = ok_json(&sandbox, &["ingest", docs_arg, "--collection", "facts", "--json"]);
    assert_eq!((again["unchanged"].as_u64(), again["embedded"].as_u64()), (Some(8), Some(0)), "{again}");

    let hits = ok_json(&sandbox, &["search", "why does bread rise", "--collection", "facts", "--json"]);
    assert!(hits[0]["path"].as_str().unwrap().ends_with("bread.md"), "{hits}");
    assert_eq!(hits[0]["headings"], json!([]));
    let whales = ok_json(&sandbox, &["search", "largest animal", "--mode", "bm25", "--json"]);
    assert!(whales[0]["path"].as_str().unwrap().ends_with("whale.md"), "{whales}");
    assert_eq!(whales[0]["headings"], json!(["Whales"]));

    // Calibration questions by document path; one naming an unknown chunk is refused.
    let questions: String = TOPICS
        .iter()
        .map(|(name, _, q)| format!("{}\n", json!({"question": q, "gold_paths": [docs.join(name)]})))
        .collect();
    let file = sandbox.path().join("questions.jsonl");
    std::fs::write(&file, &questions).unwrap();
    let bad = sandbox.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n", json!({"question": "x", "gold": [424242]}))).unwrap();
    let (ok, _, stderr) = run(&sandbox, &["calibrate", "-c", "facts", "--questions", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("chunk 424242"), "{stderr}");
    let (ok, _, stderr) =
        run(&sandbox, &["calibrate", "-c", "facts", "--alpha", "1.5", "--questions", file.to_str().unwrap()]);
    assert!(!ok && stderr.contains("alpha must be strictly between 0 and 1"), "{stderr}");
    let (ok, _, stderr) = run(&sandbox, &["calibrate", "-c", "nope", "--questions", file.to_str().unwrap()]);
    assert!(!ok && stderr.contains("no collection \"nope\""), "{stderr}");

    let cert = ok_json(
        &sandbox,
        &[
            "calibrate",
            "-c",
            "facts",
            "--alpha",
            "0.2",
            "--holdout",
            "0",
            "--questions",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    let id = cert["id"].as_str().unwrap().to_owned();
    assert_eq!(cert["calibration"]["n"], 8);
    let set = ok_json(&sandbox, &["search", "Why does bread rise?", "-c", "facts", "--alpha", "0.2", "--json"]);
    assert_eq!(set["certificate"], id.as_str());
    assert_eq!(set["coverage_guarantee"], 0.8);
    assert_eq!(set["questions_from"], file.to_str().unwrap());
    assert_eq!(set["no_guarantee"], json!([]));
    assert!(set["hits"].as_array().unwrap().iter().any(|h| h["path"].as_str().unwrap().ends_with("bread.md")), "{set}");
    // A filtered search has no certificate of its own filter: no claim, and the answer says why.
    let filtered = ok_json(
        &sandbox,
        &["search", "Why does bread rise?", "-c", "facts", "--alpha", "0.2", "--tenant", "acme", "--json"],
    );
    assert_eq!(filtered["coverage_guarantee"], Value::Null, "{filtered}");
    assert_eq!(filtered["no_guarantee"], json!(["other_filter"]), "{filtered}");
    let (ok, stdout, _) =
        run(&sandbox, &["search", "Why does bread rise?", "-c", "facts", "--alpha", "0.2", "--tenant", "acme"]);
    assert!(ok && stdout.contains("no coverage claim: no certificate for this filter"), "{stdout}");
    let listed = ok_json(&sandbox, &["certificates", "list", "--json"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["stale"], false);
    let exported = ok_json(&sandbox, &["certificates", "export", &id]);
    assert_eq!(exported["score_function"], "hybrid_min_max");
    // Eight questions make a valid certificate but a weak statement about
    // this one: the CLI says what it does guarantee and how many would do.
    let (ok, stdout, stderr) = run(
        &sandbox,
        &["calibrate", "-c", "facts", "--alpha", "0.2", "--holdout", "0", "--questions", file.to_str().unwrap()],
    );
    assert!(ok && stderr.contains("warning: with 8 questions") && stderr.contains("1033 questions"), "{stderr}");
    assert!(stdout.contains("guarantee for: questions drawn like the calibration questions"), "{stdout}");

    // Questions the LLM (SmolLM2) writes about chunks drawn from the
    // collection, each chunk the gold of its question; saved, they calibrate
    // the same threshold again through --questions.
    let saved = sandbox.path().join("generated.jsonl");
    let saved_arg = saved.to_str().unwrap();
    // α = 0.5: a finite threshold from as few as 3 questions.
    let args = [
        "calibrate",
        "-c",
        "facts",
        "--generate",
        "8",
        "--seed",
        "5",
        "--alpha",
        "0.5",
        "--holdout",
        "0",
        "--save",
        saved_arg,
    ];
    let generated = ok_json(&sandbox, &[&args[..], &["--json"]].concat());
    let lines: Vec<Value> =
        std::fs::read_to_string(&saved).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 4, "most replies hold a question: {lines:?}");
    assert_eq!(generated["calibration"]["n"], lines.len());
    assert!(generated["questions_from"].as_str().unwrap().starts_with("generated by"), "{generated}");
    let golds: std::collections::HashSet<u64> = lines
        .iter()
        .map(|l| {
            assert!(l["question"].as_str().unwrap().split_whitespace().count() >= 3, "{l}");
            assert_eq!(l["gold"].as_array().unwrap().len(), 1, "{l}");
            l["gold"][0].as_u64().unwrap()
        })
        .collect();
    assert_eq!(golds.len(), lines.len(), "chunks are drawn without replacement");
    assert!(generated["min_score"].is_f64(), "{generated}");
    let again = ok_json(
        &sandbox,
        &["calibrate", "-c", "facts", "--alpha", "0.5", "--holdout", "0", "--questions", saved_arg, "--json"],
    );
    assert_eq!(again["min_score"], generated["min_score"]);
    // How that certificate does on the hand-written questions.
    let generated_id = generated["id"].as_str().unwrap();
    let check =
        ok_json(&sandbox, &["certificates", "check", generated_id, "--questions", file.to_str().unwrap(), "--json"]);
    assert_eq!((check["n"].as_u64(), check["target"].as_f64()), (Some(8), Some(0.5)), "{check}");
    // The hand-written questions name their documents plainly: at least
    // the certified half of them find their evidence in the set.
    assert!(check["coverage"].as_f64().unwrap() >= 0.5, "{check}");
    assert!(check["median_set"].as_f64().unwrap() >= 1.0, "{check}");
    let (ok, _, stderr) = run(&sandbox, &["certificates", "check", "cert-nope", "--questions", saved_arg]);
    assert!(!ok && stderr.contains("no certificate \"cert-nope\""), "{stderr}");
    let (ok, _, stderr) = run(&sandbox, &["calibrate", "-c", "facts", "--generate", "4", "--questions", saved_arg]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = run(&sandbox, &["calibrate", "-c", "facts"]);
    assert!(!ok && stderr.contains("--questions"), "{stderr}");

    // Memory's indexes live beside retrieval's.
    for text in ["Halley's comet came by in 1986.", "The telescope needs a new lens."] {
        let (ok, _, stderr) = run(&sandbox, &["memory", "append", "log", text]);
        assert!(ok, "{stderr}");
    }

    // Delete the index directory entirely: reindex rebuilds it from the journal.
    std::fs::remove_dir_all(sandbox.data_dir().join("index")).unwrap();
    let (ok, stdout, stderr) = run(&sandbox, &["reindex"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("8 chunks (BM25 8, vectors 8)"), "{stdout}");
    assert!(stdout.contains("memory: 2 turns (BM25 2, vectors 2)"), "{stdout}");
    let hits = ok_json(&sandbox, &["search", "comet tails", "--json"]);
    assert!(hits[0]["path"].as_str().unwrap().ends_with("comet.txt"), "{hits}");
    let recalled = ok_json(&sandbox, &["memory", "recall", "log", "when did the comet come?", "-k", "1", "--json"]);
    assert!(recalled["turns"][0]["turn"]["text"].as_str().unwrap().contains("1986"), "{recalled}");
}

#[test]
fn an_unreachable_qdrant_server_is_named_and_the_daemon_keeps_serving() {
    let sandbox = Sandbox::new();
    let mut env = models_env();
    env.extend([
        ("ENGRAM_RETRIEVAL__VECTOR_STORE", "qdrant".to_owned()),
        ("ENGRAM_RETRIEVAL__QDRANT__URL", "http://127.0.0.1:9".to_owned()),
        ("ENGRAM_RETRIEVAL__QDRANT__TIMEOUT_MS", "500".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Without a daemon, the CLI says which server it could not reach.
    let out = sandbox.run(&["search", "anything"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("reaching the server"), "{stderr}");
    assert!(stderr.contains("http://127.0.0.1:9"), "{stderr}");

    // The daemon serves on; retrieval answers 503 naming the server (and
    // tries it again a few seconds after a failure).
    let daemon = sandbox.start(&env);
    for _ in 0..2 {
        let reply = post_json(&daemon.socket, "/v1/search", &json!({"query": "anything"}));
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
        assert!(reply.body.contains("retrieval is unavailable") && reply.body.contains("reaching the server"));
    }
    assert_eq!(get_unix(&daemon.socket, "/healthz").status, StatusCode::OK);
    drop(daemon);

    // An unreadable API key file costs retrieval, not the daemon.
    let missing_key = sandbox.path().join("no-such.key");
    let mut env = env.clone();
    env.push(("ENGRAM_RETRIEVAL__QDRANT__API_KEY_FILE", missing_key.to_str().unwrap()));
    let daemon = sandbox.start(&env);
    let reply = post_json(&daemon.socket, "/v1/search", &json!({"query": "anything"}));
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert!(reply.body.contains("retrieval.qdrant.api_key_file"), "{}", reply.body);
    assert_eq!(get_unix(&daemon.socket, "/v1/models").status, StatusCode::OK);
}

#[test]
fn daemon_serves_ingest_search_and_certificates_over_http() {
    let sandbox = Sandbox::new();
    let env = models_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = sandbox.start(&env);
    let socket = &daemon.socket;

    let documents: Vec<Value> =
        TOPICS.iter().map(|(name, text, _)| json!({"path": name, "text": text, "format": "markdown"})).collect();
    let reply =
        post_json(socket, "/v1/ingest", &json!({"collection": "facts", "documents": documents, "tags": ["science"]}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["added"], 8);

    // Streaming: NDJSON progress events, then the report.
    let docs = sandbox.path().join("more");
    write(&docs.join("tea.md"), "Green tea is made from unoxidised leaves.");
    let reply = post_json(socket, "/v1/ingest", &json!({"collection": "drinks", "paths": [docs], "stream": true}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    let events: Vec<Value> = reply.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0], json!({"event": "started", "total": 1}));
    let last = events.last().unwrap();
    assert_eq!((last["event"].as_str(), last["report"]["added"].as_u64()), (Some("done"), Some(1)), "{events:?}");

    let reply =
        post_json(socket, "/v1/search", &json!({"query": "why does bread rise", "collection": "facts", "k": 3}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["mode"], "hybrid");
    assert_eq!(body["hits"][0]["path"], "bread.md");
    let filtered = post_json(socket, "/v1/search", &json!({"query": "bread", "tags": ["nope"], "mode": "bm25"}));
    assert_eq!(filtered.json()["hits"], json!([]));
    let other = post_json(socket, "/v1/search", &json!({"query": "leaves", "collection": "drinks", "mode": "dense"}));
    assert!(other.json()["hits"][0]["path"].as_str().unwrap().ends_with("tea.md"), "{}", other.body);

    // The CLI goes through the running daemon.
    let (ok, stdout, stderr) = run(&sandbox, &["search", "tea leaves", "--collection", "drinks", "--json"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tea.md"), "{stdout}");
    write(&docs.join("coffee.md"), "Coffee beans are roasted seeds.");
    let (ok, stdout, stderr) = run(&sandbox, &["ingest", docs.to_str().unwrap(), "--collection", "drinks"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 added") && stdout.contains("1 unchanged"), "{stdout}");

    let collections = get_unix(socket, "/v1/collections").json();
    assert_eq!(collections["collections"][0]["name"], "drinks");
    assert_eq!(collections["collections"][1]["documents"], 8);

    // Bad requests get clear errors.
    for (body, needle) in [
        (json!({"query": ""}), "`query` is empty"),
        (json!({"query": "x", "k": 0}), "between 1 and"),
        (json!({"query": "x", "alpha": 0.1}), "needs a collection"),
        (json!({"query": "x", "collection": "facts", "alpha": 1.5}), "alpha must be strictly between 0 and 1"),
        (json!({"query": "x", "collection": "facts", "alpha": 0.1}), "engram calibrate"),
        (json!({"query": "x", "time": [5, 1]}), "from < to"),
        (json!({"query": "x", "colection": "facts"}), "unknown field"),
    ] {
        let reply = post_json(socket, "/v1/search", &body);
        assert!(reply.status.is_client_error(), "{body}: {} {}", reply.status, reply.body);
        assert!(reply.body.contains(needle), "{body}: {}", reply.body);
    }
    for (body, needle) in [
        (json!({"collection": "bad name!", "documents": []}), "not a valid name"),
        (json!({"collection": "facts"}), "give `paths`"),
        (json!({"collection": "facts", "paths": ["relative/dir"]}), "must be absolute"),
        (
            json!({"collection": "facts", "documents": [{"path": "a", "text": "b", "format": "pdf"}]}),
            "unknown variant `pdf`",
        ),
    ] {
        let reply = post_json(socket, "/v1/ingest", &body);
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reply.body);
        assert!(reply.body.contains(needle), "{body}: {}", reply.body);
    }
    let missing = get_unix(socket, "/v1/certificates/cert-nope");
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert_eq!(get_unix(socket, "/v1/certificates").json()["certificates"], json!([]));

    // Calibration through the daemon: questions in the request, or written
    // by the daemon's LLM; then a certified search and a check.
    let questions: Vec<Value> =
        TOPICS.iter().map(|(name, _, q)| json!({"question": q, "gold_paths": [name]})).collect();
    let body = json!({"collection": "facts", "alpha": 0.2, "holdout": 0, "questions": questions});
    let reply = post_json(socket, "/v1/calibrate", &body);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answer = reply.json();
    assert_eq!((answer["certificate"]["calibration"]["n"].as_u64(), &answer["generated"]), (Some(8), &Value::Null));
    let id = answer["certificate"]["id"].as_str().unwrap().to_owned();
    let set =
        post_json(socket, "/v1/search", &json!({"query": "Why does bread rise?", "collection": "facts", "alpha": 0.2}));
    assert_eq!(set.json()["certificate"], id.as_str(), "{}", set.body);
    let check = post_json(socket, &format!("/v1/certificates/{id}/check"), &json!({"questions": questions}));
    assert_eq!((check.json()["n"].as_u64(), check.json()["target"].as_f64()), (Some(8), Some(0.8)), "{}", check.body);
    assert!(check.json()["coverage"].as_f64().unwrap() >= 0.8, "{}", check.body);
    let reply = post_json(socket, "/v1/calibrate", &json!({"collection": "facts", "generate": 6, "seed": 2}));
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["generated"]["sampled"], 6);
    let written = answer["generated"]["questions"].as_array().unwrap().len();
    let cert = &answer["certificate"];
    assert!(cert["questions_from"].as_str().unwrap().starts_with("generated by"), "{cert}");
    assert_eq!(
        cert["calibration"]["n"].as_u64().unwrap() + cert["held_out"]["n"].as_u64().unwrap_or(0),
        written as u64
    );
    for (body, needle) in [
        (json!({"collection": "facts"}), "either `questions` or `generate`"),
        (json!({"collection": "facts", "generate": 1}), "between 2 and"),
        (json!({"collection": "facts", "generate": 3, "questions": []}), "either `questions` or `generate`"),
        (json!({"collection": "nope", "questions": questions}), "there is no collection"),
        (json!({"collection": "facts", "alpha": 0, "questions": questions}), "alpha must be strictly between"),
    ] {
        let reply = post_json(socket, "/v1/calibrate", &body);
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reply.body);
        assert!(reply.body.contains(needle), "{body}: {}", reply.body);
    }
    let missing = post_json(socket, "/v1/certificates/cert-nope/check", &json!({"questions": questions}));
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);

    // The CLI goes through the daemon for these too.
    let file = sandbox.path().join("questions.jsonl");
    std::fs::write(&file, questions.iter().map(|q| format!("{q}\n")).collect::<String>()).unwrap();
    let file_arg = file.to_str().unwrap();
    let cert = ok_json(&sandbox, &["calibrate", "-c", "facts", "--questions", file_arg, "--holdout", "0", "--json"]);
    assert_eq!(cert["questions_from"], file_arg);
    let saved = sandbox.path().join("written.jsonl");
    let args = ["calibrate", "-c", "facts", "--generate", "4", "--save", saved.to_str().unwrap(), "--json"];
    let generated = ok_json(&sandbox, &args);
    assert!(generated["questions_from"].as_str().unwrap().starts_with("generated by"), "{generated}");
    assert!(std::fs::read_to_string(&saved).unwrap().lines().count() >= 2);
    let listed = ok_json(&sandbox, &["certificates", "list", "-c", "facts", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let exported = ok_json(&sandbox, &["certificates", "export", &id]);
    assert_eq!(exported["id"], id.as_str());
    let checked = ok_json(&sandbox, &["certificates", "check", &id, "--questions", file_arg, "--json"]);
    assert_eq!(checked["n"], 8);
    let collections = ok_json(&sandbox, &["collections", "--json"]);
    assert_eq!(collections.as_array().unwrap().len(), 2, "{collections}");
}

#[test]
fn eval_retrieval_reports_ranking_and_coverage_on_a_beir_folder() {
    let sandbox = Sandbox::new();
    let beir = sandbox.path().join("tiny-beir");
    let mut corpus = String::new();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for (i, (name, text, question)) in TOPICS.iter().enumerate() {
        corpus.push_str(&format!("{}\n", json!({"_id": format!("d{i}"), "title": name, "text": text})));
        queries.push_str(&format!("{}\n", json!({"_id": format!("q{i}"), "text": question})));
        qrels.push_str(&format!("q{i}\td{i}\t1\n"));
    }
    write(&beir.join("corpus.jsonl"), &corpus);
    write(&beir.join("queries.jsonl"), &queries);
    write(&beir.join("qrels/test.tsv"), &qrels);
    let plot = sandbox.path().join("coverage.svg");
    let report = ok_json(
        &sandbox,
        &[
            "eval",
            "retrieval",
            "--beir",
            beir.to_str().unwrap(),
            "--splits",
            "5",
            "--plot",
            plot.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(report["queries"], 8);
    let retrievers: Vec<&str> =
        report["ranking"].as_array().unwrap().iter().map(|r| r["retriever"].as_str().unwrap()).collect();
    assert_eq!(retrievers, ["bm25", "dense", "hybrid_rrf", "hybrid_normalized"]);
    for row in report["ranking"].as_array().unwrap() {
        let ndcg = row["ndcg_at_10"].as_f64().unwrap();
        assert!(ndcg > 0.5 && ndcg <= 1.0, "{row}");
    }
    assert_eq!(report["conformal"].as_array().unwrap().len(), 3 * 4);
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    for row in report["conformal"].as_array().unwrap() {
        let [low, high] = [&row["spread"][0], &row["spread"][1]].map(|v| v.as_f64().unwrap());
        assert!(low <= row["coverage"].as_f64().unwrap() && row["coverage"].as_f64().unwrap() <= high, "{row}");
    }
    // The evaluation's corpus is cached: a second run embeds nothing. With
    // two tenants, each is certified on its own; calibrated on one question
    // file (the queries, written by scripts/beir-questions) and measured on
    // the same file, every certificate covers its target.
    let questions = sandbox.path().join("questions.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/beir-questions");
    let out = std::process::Command::new(script).arg(&beir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&questions, &out.stdout).unwrap();
    let q = questions.to_str().unwrap();
    let args = ["eval", "retrieval", "--beir", beir.to_str().unwrap(), "--splits", "2", "--tenants", "2"];
    let again = ok_json(&sandbox, &[&args[..], &["--calibrate-on", q, "--test-on", q, "--json"]].concat());
    assert_eq!(again["ingest"]["embedded"], 0);
    assert_eq!(again["ingest"]["unchanged"], 8);
    let tenants: Vec<&str> =
        again["tenants"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert!(tenants.iter().all(|t| *t == "tenant t0" || *t == "tenant t1") && !tenants.is_empty(), "{again}");
    let shift = again["shift"].as_array().unwrap();
    assert_eq!(shift.len(), 3, "{again}");
    for row in shift {
        assert_eq!((row["n"].as_u64(), row["calibrated_on"].as_u64()), (Some(8), Some(8)), "{row}");
        let coverage = row["coverage"].as_f64().unwrap();
        let [low, high] = [&row["interval"][0], &row["interval"][1]].map(|v| v.as_f64().unwrap());
        assert!(low <= coverage && coverage <= high && high - low > 0.0, "{row}");
        if row["pac"].is_null() {
            // Eight questions cannot certify α = 0.05 or 0.1: every candidate is in the set.
            assert_eq!(coverage, 1.0, "{row}");
        } else {
            assert!(coverage >= row["target"].as_f64().unwrap(), "{row}");
        }
    }
    let (ok, stdout, _) = run(&sandbox, &[&args[..], &["--calibrate-on", q, "--test-on", q]].concat());
    assert!(ok && stdout.contains("each tenant's own certificate") && stdout.contains("split range"), "{stdout}");
    // A folder that is not BEIR names what is missing.
    let (ok, _, stderr) = run(&sandbox, &["eval", "retrieval", "--beir", sandbox.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("corpus.jsonl"), "{stderr}");
}
