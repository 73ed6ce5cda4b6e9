//! The retrieval engine on real parts: an SQLite journal, tantivy and
//! qdrant-edge indexes on temp dirs, and the all-MiniLM-L6-v2 embedder.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use engram_index::{QdrantIndex, QdrantOptions};
use engram_models::Embedder;
use engram_rag::certify::{CalibrateOptions, NoGuarantee, Question, ScoreFunction, Stratum};
use engram_rag::chunk::Format;
use engram_rag::{ChunkId, Filter, Mode, NewDocument, Rag, RagError, RagOptions, Target, Unlisted, VectorBackend};
use engram_store::{Store, StoreOptions};

include!("../../models/tests/common/mod.rs");

fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let device = engram_models::Device::Cpu;
            let pool = engram_models::inference_pool(2, "test-embed").unwrap();
            Arc::new(Embedder::load(&minilm(), &device, pool, 16).expect("load all-MiniLM-L6-v2"))
        })
        .clone()
}

fn open(dir: &Path, options: RagOptions) -> Rag {
    let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    Rag::open(store, &dir.join("index"), embedder(), options).unwrap()
}

/// Journal, BM25 and vector store hold exactly the same chunk ids.
fn assert_consistent(rag: &Rag, collection: &str) -> HashSet<ChunkId> {
    let journal: HashSet<ChunkId> = rag.chunk_ids(collection).unwrap().into_iter().map(|(id, _)| id).collect();
    let filter = Filter::collection(collection).unwrap();
    let (bm25, dense) = rag.index_ids(&filter).unwrap();
    assert_eq!(bm25, journal, "BM25 disagrees with the journal");
    assert_eq!(dense, journal, "the vector store disagrees with the journal");
    journal
}

fn paths_of(rag: &Rag, collection: &str) -> HashSet<String> {
    rag.chunk_ids(collection).unwrap().into_iter().map(|(_, p)| p).collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A Qdrant server for the tests of the server backend, from
/// `ENGRAM_TEST_QDRANT_URL` (and `ENGRAM_TEST_QDRANT_API_KEY` when it wants
/// one): each test gets a collection prefix of its own, and its collection
/// is dropped when the test ends. `None` (the test is skipped, and says so)
/// when the variable is unset.
struct ServerCollection {
    options: QdrantOptions,
}

impl ServerCollection {
    fn new(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("ENGRAM_TEST_QDRANT_URL") else {
            eprintln!("skipped: {test} needs a Qdrant 1.13+ server at ENGRAM_TEST_QDRANT_URL");
            return None;
        };
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let options = QdrantOptions {
            url,
            api_key: std::env::var("ENGRAM_TEST_QDRANT_API_KEY").ok(),
            collection_prefix: format!("engram-test-{}-{nanos}-{n}", std::process::id()),
            timeout: std::time::Duration::from_secs(30),
        };
        Some(Self { options })
    }

    fn rag_options(&self) -> RagOptions {
        RagOptions { vectors: VectorBackend::Qdrant(self.options.clone()), ..RagOptions::default() }
    }

    fn collection(&self) -> String {
        self.options.collection(engram_rag::INDEX_NAME, &embedder().name)
    }
}

impl Drop for ServerCollection {
    fn drop(&mut self) {
        if let Err(err) = QdrantIndex::drop_collection(&self.options, &self.collection()) {
            eprintln!("could not drop the test collection: {err}");
        }
    }
}

#[test]
fn reingest_follows_edits_deletes_and_renames_in_every_index() {
    reingest_scenario(RagOptions::default());
}

#[test]
fn qdrant_server_follows_edits_deletes_and_renames() {
    if let Some(server) = ServerCollection::new("qdrant_server_follows_edits_deletes_and_renames") {
        reingest_scenario(server.rag_options());
    }
}

fn reingest_scenario(options: RagOptions) {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs.join("tides.md"), "# Tides\n\nTides are caused by the gravity of the Moon and the Sun.\n");
    write(&docs.join("bees.txt"), "Honey bees communicate the direction of flowers with a waggle dance.\n");
    write(&docs.join("sub/rust.rs"), "/// Adds two numbers.\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n");
    write(&docs.join("photo.png"), "\u{0}\u{1}binary");
    let rag = open(dir.path(), options);
    let target = Target::collection("notes").unwrap();
    let roots = vec![docs.clone()];

    let first = rag.ingest_paths(&target, &roots, &[], &mut engram_rag::no_progress).unwrap();
    assert_eq!((first.added, first.updated, first.unchanged, first.deleted), (3, 0, 0, 0));
    assert!(first.skipped.iter().any(|s| s.path.ends_with("photo.png") && s.reason.contains("unsupported")));
    let ids = assert_consistent(&rag, "notes");
    assert_eq!(ids.len(), 3);

    // Nothing changed: nothing written, nothing embedded.
    let again = rag.ingest_paths(&target, &roots, &[], &mut engram_rag::no_progress).unwrap();
    assert_eq!((again.added, again.updated, again.unchanged, again.embedded), (0, 0, 3, 0));
    assert_eq!(assert_consistent(&rag, "notes"), ids);

    // Edit one, delete one, rename one.
    write(&docs.join("tides.md"), "# Tides\n\nSpring tides happen at new and full moon.\n");
    std::fs::remove_file(docs.join("bees.txt")).unwrap();
    std::fs::rename(docs.join("sub/rust.rs"), docs.join("sub/add.rs")).unwrap();
    let third = rag.ingest_paths(&target, &roots, &[], &mut engram_rag::no_progress).unwrap();
    assert_eq!((third.added, third.updated, third.deleted), (1, 1, 2), "{third:?}");
    // The renamed file's text was embedded before: only the edit is new.
    assert_eq!(third.embedded, 1);
    assert_consistent(&rag, "notes");
    let paths = paths_of(&rag, "notes");
    assert!(paths.iter().any(|p| p.ends_with("sub/add.rs")));
    assert!(!paths.iter().any(|p| p.ends_with("bees.txt") || p.ends_with("sub/rust.rs")));

    let hits = rag.search("spring tides full moon", &Filter::default(), Mode::Hybrid, 3).unwrap();
    assert!(hits[0].path.ends_with("tides.md"), "{hits:?}");
    assert_eq!(hits[0].headings, vec!["Tides".to_owned()]);
    let text: Vec<char> = std::fs::read_to_string(docs.join("tides.md")).unwrap().chars().collect();
    let [start, end] = hits[0].chars;
    assert_eq!(text[start as usize..end as usize].iter().collect::<String>(), hits[0].text);
    // Nothing of the old text remains searchable.
    let old = rag.search("gravity of the Sun", &Filter::default(), Mode::Bm25, 5).unwrap();
    assert!(old.iter().all(|h| !h.text.contains("gravity")), "{old:?}");

    // A file of a root that is now missing entirely is deleted too; other
    // roots' documents are not touched by an ingest of one root.
    let other = dir.path().join("other");
    write(&other.join("a.md"), "Alpha document about volcanoes.\n");
    rag.ingest_paths(&target, std::slice::from_ref(&other), &[], &mut engram_rag::no_progress).unwrap();
    let before = paths_of(&rag, "notes");
    assert_eq!(before.len(), 3);
    std::fs::remove_dir_all(&docs).unwrap();
    let gone = rag.ingest_paths(&target, &roots, &[], &mut engram_rag::no_progress).unwrap();
    assert_eq!(gone.deleted, 2);
    assert_eq!(paths_of(&rag, "notes").len(), 1);
    assert_consistent(&rag, "notes");
}

#[test]
fn filters_restrict_hybrid_search() {
    filters_scenario(RagOptions::default());
}

#[test]
fn qdrant_server_filters_restrict_hybrid_search() {
    if let Some(server) = ServerCollection::new("qdrant_server_filters_restrict_hybrid_search") {
        filters_scenario(server.rag_options());
    }
}

fn filters_scenario(options: RagOptions) {
    let dir = tempfile::tempdir().unwrap();
    let rag = open(dir.path(), options);
    let text = "The mitochondria is the powerhouse of the cell and makes ATP.";
    let doc = |path: &str, tags: &[&str]| {
        let mut d = NewDocument::from_text(path, format!("{text} ({path})"), Format::Text);
        d.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        d
    };
    let a = Target::collection("biology").unwrap();
    let b = Target { tenant: Some("acme".parse().unwrap()), ..Target::collection("biology").unwrap() };
    let c = Target::collection("chemistry").unwrap();
    rag.ingest_documents(
        &a,
        vec![doc("/lab/x.txt", &["cell"]), doc("/notes/y.txt", &[])],
        Unlisted::Keep,
        &mut engram_rag::no_progress,
    )
    .unwrap();
    rag.ingest_documents(&b, vec![doc("/lab/z.txt", &["cell"])], Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
    rag.ingest_documents(&c, vec![doc("/lab/w.txt", &["cell"])], Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
    let paths = |filter: Filter| -> HashSet<String> {
        let mut all = HashSet::new();
        for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
            let got: HashSet<String> =
                rag.search("powerhouse of the cell", &filter, mode, 10).unwrap().into_iter().map(|h| h.path).collect();
            if !all.is_empty() {
                assert_eq!(got, all, "{mode:?} disagrees with the other modes");
            }
            all = got;
        }
        all
    };
    let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<HashSet<_>>();
    let by_collection = Filter::collection("biology").unwrap();
    assert_eq!(paths(by_collection.clone()), set(&["/lab/x.txt", "/notes/y.txt", "/lab/z.txt"]));
    assert_eq!(paths(Filter { tenant: Some("acme".parse().unwrap()), ..Filter::default() }), set(&["/lab/z.txt"]));
    let by_prefix = Filter { path_prefix: Some("/lab/".into()), ..by_collection.clone() };
    match rag.search("powerhouse of the cell", &by_prefix, Mode::Dense, 10) {
        Err(err) if err.to_string().contains("need Qdrant 1.19") => {
            eprintln!("skipped the path prefix filter: {err}");
        }
        _ => assert_eq!(paths(by_prefix), set(&["/lab/x.txt", "/lab/z.txt"])),
    }
    assert_eq!(
        paths(Filter { tags: vec!["cell".into()], ..Filter::default() }),
        set(&["/lab/x.txt", "/lab/z.txt", "/lab/w.txt"])
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(paths(Filter { time: Some(now - 3600..now + 3600), ..by_collection.clone() }).len(), 3);
    assert!(paths(Filter { time: Some(0..1000), ..Filter::default() }).is_empty());
}

const CRASH_ENV: &str = "ENGRAM_TEST_RAG_CRASH_DIR";
const CRASH_PHASE_ENV: &str = "ENGRAM_TEST_RAG_CRASH_PHASE";

/// The child half of the crash test. Phase `deferred`: journal-only
/// ingests (the indexes are left behind, as if killed right after the
/// journal commit), then it waits to be killed. Phase `live`: normal
/// ingests, each acknowledged, until killed mid-stream.
#[test]
fn crash_child_process() {
    let (Ok(dir), Ok(phase)) = (std::env::var(CRASH_ENV), std::env::var(CRASH_PHASE_ENV)) else { return };
    let dir = PathBuf::from(dir);
    let target = Target::collection("crash").unwrap();
    let deferred = phase == "deferred";
    let rag = open(&dir, RagOptions { defer_indexing: deferred, ..RagOptions::default() });
    for i in 0..100_000 {
        let name = format!("{phase}-{i}");
        let doc = NewDocument::from_text(&name, format!("The {phase} note number {i} is about comets."), Format::Text);
        rag.ingest_documents(&target, vec![doc], Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
        // Straight to the pipe: libtest captures `println!` even with --nocapture.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {name}").and_then(|()| out.flush()).unwrap();
        drop(out);
        if deferred && i == 4 {
            loop {
                std::thread::park();
            }
        }
    }
}

fn run_child(dir: &Path, phase: &str, acks: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_process", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, dir)
        .env(CRASH_PHASE_ENV, phase)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // libtest's "test crash_child_process ... " may precede the first ack on its line.
    let ack = |line: &str| line.find("ack ").map(|at| line[at + 4..].to_owned());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < acks {
        let line = lines.next().expect("child ended early").unwrap();
        acked.extend(ack(&line));
    }
    child.kill().unwrap(); // SIGKILL, possibly mid-write
    child.wait().unwrap();
    acked.extend(lines.map_while(Result::ok).filter_map(|line| ack(&line)));
    acked
}

#[test]
fn killed_between_journal_and_index_writes_catches_up_on_restart() {
    if std::env::var(CRASH_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = run_child(dir.path(), "deferred", 5);
    // The acknowledged documents are in the journal, not in the indexes.
    {
        let store = Store::open(&dir.path().join("journal.sqlite3"), &StoreOptions::default()).unwrap();
        let bm25 = engram_index::Bm25::open(&dir.path().join("index/bm25"), engram_rag::SCHEMA).unwrap();
        let chunks: i64 = store.read(|c| c.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))).unwrap();
        assert_eq!((chunks, bm25.len()), (5, 0));
    }
    // The next process catches up on open, then is killed mid-stream.
    acked.extend(run_child(dir.path(), "live", 4));

    let rag = open(dir.path(), RagOptions::default());
    let ids = assert_consistent(&rag, "crash");
    let paths = paths_of(&rag, "crash");
    for doc in &acked {
        assert!(paths.contains(doc), "acknowledged document {doc} is missing after the restart");
    }
    assert!(ids.len() >= acked.len());
    let hits = rag.search("the deferred note about comets", &Filter::default(), Mode::Hybrid, 10).unwrap();
    assert!(hits.iter().any(|h| h.path.starts_with("deferred-")), "{hits:?}");
}

#[test]
fn reindex_rebuilds_both_indexes_from_the_journal() {
    reindex_scenario(RagOptions::default());
}

#[test]
fn qdrant_server_reindex_rebuilds_the_collection() {
    if let Some(server) = ServerCollection::new("qdrant_server_reindex_rebuilds_the_collection") {
        reindex_scenario(server.rag_options());
        // The watermark lives on the server: a collection dropped behind
        // the journal's back is rebuilt on the next open.
        let dir = tempfile::tempdir().unwrap();
        let rag = open(dir.path(), server.rag_options());
        let doc = NewDocument::from_text("fjord", "Fjords are glacial valleys flooded by the sea.", Format::Text);
        rag.ingest_documents(
            &Target::collection("geo").unwrap(),
            vec![doc],
            Unlisted::Keep,
            &mut engram_rag::no_progress,
        )
        .unwrap();
        drop(rag);
        QdrantIndex::drop_collection(&server.options, &server.collection()).unwrap();
        let rag = open(dir.path(), server.rag_options());
        assert_eq!(assert_consistent(&rag, "geo").len(), 1);
        let hits = rag.search("glacial valleys", &Filter::default(), Mode::Dense, 1).unwrap();
        assert_eq!(hits[0].path, "fjord");
    }
}

fn reindex_scenario(options: RagOptions) {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::collection("docs").unwrap();
    let ids = {
        let rag = open(dir.path(), options.clone());
        let docs = (0..6)
            .map(|i| {
                NewDocument::from_text(format!("d{i}"), format!("Document {i} on glaciers and ice."), Format::Text)
            })
            .collect();
        rag.ingest_documents(&target, docs, Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
        assert_consistent(&rag, "docs")
    };
    Rag::wipe_indexes(&dir.path().join("index"), &embedder().name, &options).unwrap();
    let rag = open(dir.path(), options);
    assert_eq!(assert_consistent(&rag, "docs"), ids);
    let stats = rag.stats().unwrap();
    assert_eq!((stats.bm25_chunks, stats.vector_chunks), (6, 6));
}

#[test]
fn calibration_certifies_and_bad_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rag = open(dir.path(), RagOptions::default());
    let topics = [
        ("volcano", "Volcanoes erupt when magma rises through the crust."),
        ("whale", "Blue whales are the largest animals that ever lived."),
        ("piano", "A piano makes sound when hammers strike its strings."),
        ("desert", "The Sahara is the largest hot desert on Earth."),
        ("vaccine", "Vaccines train the immune system to recognise a pathogen."),
        ("glacier", "Glaciers form where snow accumulates faster than it melts."),
        ("bread", "Yeast makes bread rise by releasing carbon dioxide."),
        ("comet", "Comets grow tails of gas and dust near the Sun."),
        ("chess", "In chess, the king moves one square in any direction."),
        ("tea", "Green tea is made from unoxidised leaves of Camellia sinensis."),
    ];
    let docs = topics.iter().map(|(name, text)| NewDocument::from_text(*name, *text, Format::Text)).collect();
    let options = CalibrateOptions {
        alpha: 0.2,
        score_function: ScoreFunction::HybridScaled,
        holdout: 0.0,
        seed: 7,
        questions_from: "test".into(),
        stratum: Stratum::default(),
    };
    // An empty (unknown) collection.
    let err = rag.calibrate("science", &[], &options).unwrap_err();
    assert!(err.to_string().contains("nothing has been ingested"), "{err}");
    rag.ingest_documents(&Target::collection("science").unwrap(), docs, Unlisted::Keep, &mut engram_rag::no_progress)
        .unwrap();
    let ids = rag.chunk_ids("science").unwrap();
    let questions: Vec<Question> = [
        "What makes magma erupt?",
        "Which animal is the biggest ever?",
        "How does a piano produce sound?",
        "Where is the largest hot desert?",
        "How do vaccines work?",
        "How are glaciers formed?",
        "Why does bread rise?",
        "Why do comets have tails?",
        "How does the king move in chess?",
        "What is green tea made from?",
    ]
    .iter()
    .zip(&ids)
    .map(|(q, (id, _))| Question { question: (*q).to_owned(), gold: vec![*id], gold_paths: vec![] })
    .collect();

    for alpha in [0.0, 1.0, -0.5, f64::NAN] {
        let err = rag.calibrate("science", &questions, &CalibrateOptions { alpha, ..options.clone() }).unwrap_err();
        assert!(err.to_string().contains("alpha must be strictly between 0 and 1"), "{err}");
    }
    let mut unknown = questions.clone();
    unknown[3].gold = vec![ChunkId(999_999)];
    let err = rag.calibrate("science", &unknown, &options).unwrap_err();
    assert!(err.to_string().contains("question 4 names chunk 999999"), "{err}");
    let mut unknown_path = questions.clone();
    unknown_path[0] = Question { question: "x".into(), gold: vec![], gold_paths: vec!["nope".into()] };
    assert!(matches!(rag.calibrate("science", &unknown_path, &options), Err(RagError::Invalid(_))));

    let cert = rag.calibrate("science", &questions, &options).unwrap();
    // n = 10, α = 0.2: the ⌈11·0.8⌉ = 9th smallest nonconformity.
    assert_eq!((cert.calibration.n, cert.calibration.rank), (10, 9));
    let min_score = cert.min_score.expect("every question finds its gold chunk");
    let listed = rag.certificates(Some("science")).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].exact());
    // What the journal gives back is what was issued, every float bit for bit.
    assert_eq!(listed[0].certificate, cert);
    // Ten questions: on average 1 − α, but this certificate's own coverage
    // is only known to be ≥ the 5% quantile of Beta(9, 2) (≈ 0.606).
    let pac = cert.pac.expect("a finite threshold states a PAC bound");
    assert!((pac.coverage - 0.605_837).abs() < 1e-5 && pac.delta == 0.05, "{pac:?}");
    let advice = cert.advice().expect("ten questions are too few for a useful statement");
    assert!(advice.contains("1033 questions"), "{advice}");
    // Checked on its own calibration questions (none held out), at least
    // the 9 of 10 up to the threshold's rank are covered; a check needs a
    // known certificate and questions.
    let (status, checked) = rag.check_certificate(&cert.id, &questions).unwrap();
    assert_eq!(status.certificate.id, cert.id);
    assert_eq!(checked.n, 10);
    assert!(checked.coverage >= 0.9, "{checked:?}");
    assert!(matches!(rag.check_certificate("cert-nope", &questions), Err(RagError::NotFound(_))));
    assert!(matches!(rag.check_certificate(&cert.id, &[]), Err(RagError::Invalid(_))));

    let filter = Filter::collection("science").unwrap();
    let set = rag.conformal_search("Why does bread rise?", &filter, 0.2, 50, None).unwrap();
    assert_eq!(set.certificate, cert.id);
    assert_eq!(set.coverage_guarantee, Some(0.8));
    assert_eq!((set.pac, set.no_guarantee.as_slice(), set.questions_from.as_str()), (Some(pac), &[][..], "test"));
    assert!(!set.truncated);
    assert!(set.hits.iter().all(|h| h.score >= min_score));
    assert!(set.hits.iter().any(|h| h.path == "bread"), "{set:?}");
    // A cap that cuts the set voids the claim.
    if set.set_size > 1 {
        let cut = rag.conformal_search("Why does bread rise?", &filter, 0.2, 1, None).unwrap();
        assert!(cut.truncated && cut.coverage_guarantee.is_none() && cut.pac.is_none());
        assert_eq!(cut.no_guarantee, [NoGuarantee::MaxChunks]);
    }
    let tokens = rag.conformal_search("Why does bread rise?", &filter, 0.2, 50, Some(1)).unwrap();
    assert_eq!(tokens.no_guarantee, [NoGuarantee::MaxTokens], "{tokens:?}");
    // No certificate at a stricter level.
    let err = rag.conformal_search("bread", &filter, 0.05, 50, None).unwrap_err();
    assert!(err.to_string().contains("engram calibrate"), "{err}");
    // Ten questions cannot certify α = 0.05 (⌈11·0.95⌉ = 11 > 10): the set
    // would be the whole collection, so the candidates claim nothing.
    let strict = rag.calibrate("science", &questions, &CalibrateOptions { alpha: 0.05, ..options.clone() }).unwrap();
    assert_eq!(strict.min_score, None);
    let everything = rag.conformal_search("Why does bread rise?", &filter, 0.05, 50, None).unwrap();
    assert_eq!(everything.certificate, strict.id);
    assert!(everything.truncated && everything.coverage_guarantee.is_none(), "{everything:?}");
    assert_eq!(everything.no_guarantee, [NoGuarantee::Unbounded]);
    assert!(strict.pac.is_none() && strict.advice().is_some_and(|a| a.contains("cannot certify")));

    // Another candidate count scores differently: the certificate no
    // longer holds until the count is back.
    drop(rag);
    let rag = open(dir.path(), RagOptions { candidates: 50, ..RagOptions::default() });
    assert!(rag.certificates(Some("science")).unwrap().iter().all(|c| c.stale));
    drop(rag);
    let rag = open(dir.path(), RagOptions::default());
    assert!(!rag.certificates(Some("science")).unwrap()[0].stale);

    // Another collection's documents change nothing here: BM25 scores with
    // the statistics of the filtered chunks only.
    let before = rag.scored("Why does bread rise?", &filter, ScoreFunction::HybridMinMax).unwrap();
    let other = (0..20)
        .map(|i| NewDocument::from_text(format!("o{i}"), format!("Bread rises {i} times in oven {i}."), Format::Text))
        .collect();
    rag.ingest_documents(&Target::collection("other").unwrap(), other, Unlisted::Keep, &mut engram_rag::no_progress)
        .unwrap();
    assert_eq!(rag.scored("Why does bread rise?", &filter, ScoreFunction::HybridMinMax).unwrap(), before);
    assert!(rag.certificates(Some("science")).unwrap()[0].exact());

    // One chunk change in ten is within the allowance (inclusive): the set
    // comes back approximate, claiming nothing.
    let one = vec![NewDocument::from_text("new0", "New fact 0.", Format::Text)];
    rag.ingest_documents(&Target::collection("science").unwrap(), one, Unlisted::Keep, &mut engram_rag::no_progress)
        .unwrap();
    let listed = rag.certificates(Some("science")).unwrap();
    let status = listed.iter().find(|c| c.certificate.id == cert.id).unwrap();
    assert!(status.approximate && !status.stale && status.changes_since == 1 && status.allowed_changes == 1);
    let approximate = rag.conformal_search("Why does bread rise?", &filter, 0.2, 50, None).unwrap();
    assert!(approximate.approximate && approximate.coverage_guarantee.is_none(), "{approximate:?}");
    assert_eq!(approximate.no_guarantee, [NoGuarantee::Approximate]);

    // More than a tenth makes it stale.
    let more =
        (1..3).map(|i| NewDocument::from_text(format!("new{i}"), format!("New fact {i}."), Format::Text)).collect();
    rag.ingest_documents(&Target::collection("science").unwrap(), more, Unlisted::Keep, &mut engram_rag::no_progress)
        .unwrap();
    let listed = rag.certificates(Some("science")).unwrap();
    let status = listed.iter().find(|c| c.certificate.id == cert.id).unwrap();
    assert!(status.stale && status.changes_since == 3, "{listed:?}");
    assert!(status.stale_because.as_deref().is_some_and(|why| why.contains("3 chunk changes")), "{status:?}");
    let stale = rag.conformal_search("Why does bread rise?", &filter, 0.2, 50, None).unwrap();
    assert!(stale.stale && stale.coverage_guarantee.is_none());
    assert_eq!(stale.no_guarantee, [NoGuarantee::Stale]);

    // A fresh certificate at a stricter level is preferred to the stale one
    // at the level asked for: it can claim.
    let fresh = rag.calibrate("science", &questions, &CalibrateOptions { alpha: 0.1, ..options.clone() }).unwrap();
    assert!(fresh.min_score.is_some(), "ten found golds certify α = 0.1 (rank 10)");
    let preferred = rag.conformal_search("Why does bread rise?", &filter, 0.2, 50, None).unwrap();
    assert_eq!(preferred.certificate, fresh.id);
    assert_eq!(preferred.coverage_guarantee, Some(0.9));
}

/// Certificates are per stratum: calibrated within a tenant, claimed only
/// by that tenant's searches; misses count; other strata claim nothing.
#[test]
fn certificates_hold_only_for_the_filter_they_were_calibrated_under() {
    let dir = tempfile::tempdir().unwrap();
    // Three candidates per list: a question far from its gold misses.
    let rag = open(dir.path(), RagOptions { candidates: 3, ..RagOptions::default() });
    let facts = [
        ("volcano", "Volcanoes erupt when magma rises through the crust.", "What makes magma erupt?"),
        ("whale", "Blue whales are the largest animals that ever lived.", "Which animal is the biggest ever?"),
        ("piano", "A piano makes sound when hammers strike its strings.", "How does a piano produce sound?"),
        ("desert", "The Sahara is the largest hot desert on Earth.", "Where is the largest hot desert?"),
        ("vaccine", "Vaccines train the immune system to recognise a pathogen.", "How do vaccines work?"),
        ("glacier", "Glaciers form where snow accumulates faster than it melts.", "How are glaciers formed?"),
        ("bread", "Yeast makes bread rise by releasing carbon dioxide.", "Why does bread rise?"),
        ("comet", "Comets grow tails of gas and dust near the Sun.", "Why do comets have tails?"),
        ("chess", "In chess, the king moves one square in any direction.", "Which planet has rings of ice?"),
        ("tea", "Green tea is made from unoxidised leaves of Camellia sinensis.", "What is green tea made from?"),
    ];
    for tenant in ["a", "b"] {
        let target = Target { tenant: Some(tenant.parse().unwrap()), ..Target::collection("science").unwrap() };
        let docs = facts
            .iter()
            .map(|(name, text, _)| NewDocument::from_text(format!("{tenant}/{name}"), *text, Format::Text))
            .collect();
        rag.ingest_documents(&target, docs, Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
    }
    let questions = |tenant: &str| -> Vec<Question> {
        facts
            .iter()
            .map(|(name, _, q)| Question {
                question: (*q).to_owned(),
                gold: vec![],
                gold_paths: vec![format!("{tenant}/{name}")],
            })
            .collect()
    };
    let tenant_a = Stratum { tenant: Some("a".parse().unwrap()), ..Stratum::default() };
    let options = CalibrateOptions {
        alpha: 0.2,
        score_function: ScoreFunction::HybridMinMax,
        holdout: 0.0,
        seed: 3,
        questions_from: "tenant a's questions".into(),
        stratum: tenant_a.clone(),
    };
    // Evidence outside the stratum is refused, naming it.
    let err = rag.calibrate("science", &questions("b"), &options).unwrap_err().to_string();
    assert!(err.contains("\"b/volcano\", which is not in collection \"science\" within tenant `a`"), "{err}");
    let cert = rag.calibrate("science", &questions("a"), &options).unwrap();
    assert_eq!((cert.stratum.clone(), cert.chunks), (tenant_a.clone(), 10));
    // The chess question asks about planets: its gold is not a candidate.
    let filter_a = tenant_a.filter(&"science".parse().unwrap());
    let chess = rag.scored("Which planet has rings of ice?", &filter_a, ScoreFunction::HybridMinMax).unwrap();
    assert_eq!(chess.len(), 3, "three candidates per list, overlapping: {chess:?}");
    let missed = rag.check_certificate(&cert.id, &questions("a")[8..9]).unwrap().1;
    assert_eq!(missed.coverage, 0.0, "a miss is never covered");
    // Nine of ten found: the 9th smallest nonconformity is finite at
    // α = 0.2 (rank 9) and the miss makes α = 0.1 (rank 10) unbounded.
    assert!(cert.min_score.is_some(), "{cert:?}");
    let strict =
        rag.calibrate("science", &questions("a"), &CalibrateOptions { alpha: 0.1, ..options.clone() }).unwrap();
    assert_eq!(strict.min_score, None);

    let search = |filter: &Filter| rag.conformal_search("Why does bread rise?", filter, 0.2, 50, None).unwrap();
    let own = search(&filter_a);
    assert_eq!((own.certificate.as_str(), own.coverage_guarantee), (cert.id.as_str(), Some(0.8)));
    assert_eq!(own.stratum, tenant_a);
    assert!(own.population.contains("tenant `a`") && own.population.contains("tenant a's questions"));
    assert!(own.hits.iter().all(|h| h.path.starts_with("a/")), "{own:?}");
    // Another tenant, the whole collection, or a narrower filter: no claim.
    let filter_b =
        Stratum { tenant: Some("b".parse().unwrap()), ..Stratum::default() }.filter(&"science".parse().unwrap());
    let narrower = Filter { path_prefix: Some("a/b".into()), ..filter_a.clone() };
    for filter in [filter_b.clone(), Filter::collection("science").unwrap(), narrower.clone()] {
        let set = search(&filter);
        assert_eq!(set.coverage_guarantee, None, "{filter:?}");
        assert!(set.no_guarantee.contains(&NoGuarantee::OtherFilter), "{set:?}");
    }
    // Tenant b's own certificate claims for tenant b, and tenant a keeps its own.
    let cert_b = rag
        .calibrate("science", &questions("b"), &CalibrateOptions { stratum: Stratum::of(&filter_b), ..options.clone() })
        .unwrap();
    assert_eq!(search(&filter_b).certificate, cert_b.id);
    assert_eq!(search(&filter_b).coverage_guarantee, Some(0.8));
    assert_eq!(search(&filter_a).certificate, cert.id);
    // Without a certificate of its own filter, a search is cut at its own
    // tenant's threshold (claiming nothing), never another tenant's.
    let within_a = search(&narrower);
    assert_eq!((within_a.certificate.as_str(), within_a.coverage_guarantee), (cert.id.as_str(), None));
    // Tenant b's documents do not move tenant a's scores.
    let before = rag.scored("Why does bread rise?", &filter_a, ScoreFunction::HybridMinMax).unwrap();
    let target_b = Target { tenant: Some("b".parse().unwrap()), ..Target::collection("science").unwrap() };
    let bread = vec![NewDocument::from_text("b/more-bread", "Bread, bread and more bread rises.", Format::Text)];
    rag.ingest_documents(&target_b, bread, Unlisted::Keep, &mut engram_rag::no_progress).unwrap();
    assert_eq!(rag.scored("Why does bread rise?", &filter_a, ScoreFunction::HybridMinMax).unwrap(), before);
}

#[test]
fn sampled_chunks_are_distinct_reproducible_and_long_enough_to_ask_about() {
    let dir = tempfile::tempdir().unwrap();
    let rag = open(dir.path(), RagOptions::default());
    let docs = (0..12)
        .map(|i| {
            let text = if i % 3 == 0 {
                format!("Too short {i}.")
            } else {
                format!("Document {i} explains how glaciers carve valleys over many thousands of years.")
            };
            NewDocument::from_text(format!("d{i}"), text, Format::Text)
        })
        .collect();
    rag.ingest_documents(&Target::collection("ice").unwrap(), docs, Unlisted::Keep, &mut engram_rag::no_progress)
        .unwrap();
    let whole = Stratum::default();
    let first = rag.sample_chunks("ice", &whole, 5, 7).unwrap();
    assert_eq!(first, rag.sample_chunks("ice", &whole, 5, 7).unwrap(), "the same seed draws the same chunks");
    assert_ne!(first, rag.sample_chunks("ice", &whole, 5, 8).unwrap());
    let ids: HashSet<ChunkId> = first.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 5);
    let all = rag.sample_chunks("ice", &whole, 100, 1).unwrap();
    assert_eq!(all.len(), 8, "the 4 short chunks are passed over");
    assert!(all.iter().all(|c| c.text.contains("glaciers") && !c.path.is_empty()));
    assert!(matches!(rag.sample_chunks("nope", &whole, 3, 1), Err(RagError::Invalid(_))));
    // Within a stratum: only its chunks (here, none of an unknown tenant).
    let nobody = Stratum { tenant: Some("nobody".parse().unwrap()), ..Stratum::default() };
    assert!(rag.sample_chunks("ice", &nobody, 3, 1).is_err());
}
