//! `engram ingest | search | reindex | calibrate | certificates | collections`
//! and `engram eval retrieval`: retrieval from the command line, on the data
//! directory's journal and indexes (the daemon must not be running: it owns
//! them while it runs).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use engram_config::{Config, Loaded, Paths, VectorStoreKind};
use engram_rag::certify::{CalibrateOptions, Certificate, ConformalSet, Question, ScoreFunction};
use engram_rag::eval::{EvalOptions, RetrievalEval, evaluate};
use engram_rag::qdrant_server::QdrantOptions;
use engram_rag::{Filter, IngestReport, Mode, Progress, Rag, RagOptions, Target, VectorBackend};
use engram_store::Store;

/// `engram ingest` options.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files and folders to ingest (Markdown, text, HTML, source code).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The collection to ingest into (created on first use).
    #[arg(long, short)]
    pub collection: String,
    /// The tenant the documents belong to.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// A tag searches can filter on (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `engram search` options.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Only this collection (required with --alpha).
    #[arg(long, short)]
    pub collection: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only documents whose path starts with this.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Only documents with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Results to return.
    #[arg(long, short, default_value_t = 5)]
    pub k: usize,
    /// bm25, dense or hybrid.
    #[arg(long, default_value = "hybrid", value_parser = parse_mode)]
    pub mode: Mode,
    /// Return every chunk the collection's certificate admits at this
    /// miscoverage level (see `engram calibrate`).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// With --alpha: at most this many chunks (a cut set claims nothing).
    #[arg(long, default_value_t = 50)]
    pub max_chunks: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(name: &str) -> Result<Mode, String> {
    Mode::parse(name).ok_or_else(|| format!("unknown mode {name:?}: use bm25, dense or hybrid"))
}

fn parse_score(name: &str) -> Result<ScoreFunction, String> {
    ScoreFunction::parse(name).ok_or_else(|| {
        let names: Vec<&str> = ScoreFunction::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown score function {name:?}: use one of {}", names.join(", "))
    })
}

/// `engram calibrate` options.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The collection to certify.
    #[arg(long, short)]
    pub collection: String,
    /// Miscoverage level α in (0, 1): the evidence is in the set with
    /// probability at least 1 − α.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Calibration questions, one JSON object per line:
    /// {"question": "...", "gold": [chunk ids]} or {"question": "...", "gold_paths": ["path"]}.
    #[arg(long, value_name = "FILE.jsonl", required_unless_present = "generate", conflicts_with = "generate")]
    pub questions: Option<PathBuf>,
    /// Instead of a file: have the LLM write N questions, one per chunk
    /// drawn at random from the collection (that chunk is the gold).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub generate: Option<u32>,
    /// With --generate: also write the questions to this JSONL file (to
    /// review, edit, and pass back with --questions).
    #[arg(long, value_name = "FILE.jsonl", requires = "generate")]
    pub save: Option<PathBuf>,
    /// The score function (the same one scores queries at this level).
    #[arg(long, default_value = "hybrid_min_max", value_parser = parse_score)]
    pub score: ScoreFunction,
    /// Share of the questions held out to measure coverage.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the certificate as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `engram certificates` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CertificatesCommand {
    /// List certificates, newest first, with whether each still holds.
    List {
        /// Only this collection.
        #[arg(long, short)]
        collection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one certificate as JSON.
    Export {
        /// Its id.
        id: String,
    },
    /// Measure a certificate on other questions with known evidence (say,
    /// real users' questions after calibrating on generated ones): the share
    /// whose evidence is in the certified set, and the set sizes.
    Check {
        /// Its id.
        id: String,
        /// Questions in the calibration format (JSONL).
        #[arg(long, value_name = "FILE.jsonl")]
        questions: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `engram eval retrieval` options.
#[derive(Debug, clap::Args)]
pub struct EvalRetrievalArgs {
    /// A BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(long, value_name = "DIR")]
    pub beir: PathBuf,
    /// The qrels split (default: test if present, else the only one).
    #[arg(long)]
    pub split: Option<String>,
    /// Random calibration/test splits of the queries.
    #[arg(long, default_value_t = 20)]
    pub splits: usize,
    /// Where the evaluation's own journal and indexes live (reused: an
    /// unchanged corpus is not embedded again) [default: <cache dir>/eval/<folder name>].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Draw empirical against target coverage to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print every figure as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `engram eval` targets.
#[derive(Debug, clap::Subcommand)]
pub enum EvalTarget {
    /// Ranking quality and conformal coverage on a BEIR data set.
    Retrieval(EvalRetrievalArgs),
}

/// Retrieval options from `[retrieval]` (reading the Qdrant API key file
/// when the server backend is chosen).
pub fn options(config: &Config, paths: &Paths) -> anyhow::Result<RagOptions> {
    let r = &config.retrieval;
    let vectors = match r.vector_store {
        VectorStoreKind::Edge => VectorBackend::Edge,
        VectorStoreKind::Qdrant => {
            let api_key = match &paths.qdrant_api_key_file {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read retrieval.qdrant.api_key_file {}", file.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            VectorBackend::Qdrant(QdrantOptions {
                url: r.qdrant.url.clone(),
                api_key,
                collection_prefix: r.qdrant.collection_prefix.clone(),
                timeout: std::time::Duration::from_millis(r.qdrant.timeout_ms),
            })
        }
    };
    Ok(RagOptions { vectors, ..embedded_options(config) })
}

/// Retrieval options from `[retrieval]` with the embedded vector store
/// (nothing read from disk).
pub fn embedded_options(config: &Config) -> RagOptions {
    let r = &config.retrieval;
    RagOptions {
        chunk: engram_rag::chunk::ChunkOptions { target_tokens: r.chunk_tokens, overlap_tokens: r.chunk_overlap },
        max_file_bytes: r.max_file_bytes,
        fusion: match r.fusion {
            engram_config::FusionKind::Normalized => engram_rag::fusion::Fusion::Normalized { weights: [0.5, 0.5] },
            engram_config::FusionKind::Rrf => engram_rag::fusion::Fusion::Rrf { k: 60.0 },
        },
        candidates: r.candidates,
        defer_indexing: false,
        vectors: VectorBackend::Edge,
    }
}

/// The derived indexes' directory.
pub fn index_dir(paths: &Paths) -> PathBuf {
    paths.data_dir.join("index")
}

/// The journal and indexes of the data directory, locked against a daemon.
pub struct Local {
    _lock: crate::serve::DataDirLock,
    /// The engine.
    pub rag: Rag,
}

/// Opens the data directory's retrieval engine (refused while a daemon
/// serves it).
pub fn open_local(loaded: &Loaded, paths: &Paths) -> anyhow::Result<Local> {
    crate::serve::create_private_dir(&paths.data_dir)?;
    let lock = crate::serve::DataDirLock::acquire(&paths.lock_file, &paths.data_dir)?;
    let embedder = crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?;
    open_locked(lock, loaded, paths, Arc::new(embedder))
}

fn open_locked(
    lock: crate::serve::DataDirLock,
    loaded: &Loaded,
    paths: &Paths,
    embedder: Arc<engram_models::Embedder>,
) -> anyhow::Result<Local> {
    let store = Store::open(&paths.journal, &crate::serve::store_options(&loaded.config))?;
    let rag = Rag::open(store, &index_dir(paths), embedder, options(&loaded.config, paths)?)
        .context("cannot open the retrieval indexes")?;
    Ok(Local { _lock: lock, rag })
}

/// A bar labelled `label` counting `unit` on a terminal's stderr, nothing
/// otherwise.
fn terminal_bar(label: &'static str, unit: &str, len: u64) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}} left)"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label);
        bar
    })
}

/// Ingest progress as a bar on a terminal, nothing otherwise.
fn progress_bar(label: &'static str) -> impl FnMut(&Progress) {
    let bar = terminal_bar(label, "documents", 0);
    move |event: &Progress| {
        let Some(bar) = &bar else { return };
        match event {
            Progress::Started { total } => bar.set_length(*total as u64),
            Progress::Documents { done, total } => {
                bar.set_position(*done as u64);
                if done >= total {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn print_report(report: &IngestReport) {
    println!(
        "{}: {} added, {} updated, {} unchanged, {} deleted; {} chunks written, {} removed, {} embedded; {:.1}s",
        report.collection,
        report.added,
        report.updated,
        report.unchanged,
        report.deleted,
        report.chunks_written,
        report.chunks_removed,
        report.embedded,
        report.seconds
    );
    if !report.skipped.is_empty() {
        println!("skipped {} file(s):", report.skipped.len());
        for skipped in &report.skipped {
            println!("  {}: {}", skipped.path, skipped.reason);
        }
    }
}

/// Whether a daemon answers on the socket (then it owns the indexes and
/// commands go through it).
fn daemon_running(paths: &Paths) -> bool {
    std::os::unix::net::UnixStream::connect(&paths.socket).is_ok()
}

/// POSTs `body` to the running daemon and returns its JSON answer, or its
/// error message.
fn via_daemon(paths: &Paths, route: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    daemon_call(paths, "POST", route, Some(body))
}

/// One request to the running daemon: its JSON answer, or its error message.
fn daemon_call(
    paths: &Paths,
    method: &str,
    route: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, value) = runtime.block_on(crate::plugins::request(paths, method, route, body))?;
    if !status.is_success() {
        let message = value["error"]["message"].as_str().unwrap_or("no message").to_owned();
        anyhow::bail!("the daemon refused {route} ({status}): {message}");
    }
    Ok(value)
}

/// `engram ingest`: through the running daemon if there is one, else on
/// the data directory directly.
pub fn ingest(loaded: &Loaded, paths: &Paths, args: &IngestArgs) -> anyhow::Result<()> {
    engram_rag::engine::check_name("collection", &args.collection, false)?;
    if daemon_running(paths) {
        let absolute: Vec<PathBuf> =
            args.paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
        let body = serde_json::json!({
            "collection": args.collection, "tenant": args.tenant, "tags": args.tags, "paths": absolute,
        });
        let value = via_daemon(paths, "/v1/ingest", body)?;
        let report: IngestReport = serde_json::from_value(value).context("the daemon's ingest report")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        return Ok(());
    }
    let local = open_local(loaded, paths)?;
    let target = Target { collection: args.collection.clone(), tenant: args.tenant.clone() };
    let report = local.rag.ingest_paths(&target, &args.paths, &args.tags, &mut progress_bar("ingesting"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// `engram search`: through the running daemon if there is one.
pub fn search(loaded: &Loaded, paths: &Paths, args: &SearchArgs) -> anyhow::Result<()> {
    let filter = Filter {
        collection: args.collection.clone(),
        tenant: args.tenant.clone(),
        path_prefix: args.path_prefix.clone(),
        tags: args.tags.clone(),
        time: None,
    };
    let remote = daemon_running(paths).then(|| {
        serde_json::json!({
            "query": args.query, "collection": args.collection, "tenant": args.tenant,
            "path_prefix": args.path_prefix, "tags": args.tags, "k": args.k, "mode": args.mode,
            "alpha": args.alpha, "max_chunks": args.max_chunks,
        })
    });
    let local = match remote {
        Some(_) => None,
        None => Some(open_local(loaded, paths)?),
    };
    if let Some(alpha) = args.alpha {
        let set: ConformalSet = match (&local, remote) {
            (Some(local), _) => local.rag.conformal_search(&args.query, &filter, alpha, args.max_chunks, None)?,
            (None, Some(body)) => serde_json::from_value(via_daemon(paths, "/v1/search", body)?)?,
            (None, None) => unreachable!("one of the two is set"),
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&set)?);
            return Ok(());
        }
        let claim = match set.coverage_guarantee {
            Some(p) => format!("the evidence is in this set with probability ≥ {p:.2}"),
            None if set.truncated => "truncated by --max-chunks: no coverage claim".to_owned(),
            None => "the certificate is stale: no coverage claim (run engram calibrate)".to_owned(),
        };
        println!("{} chunk(s) under certificate {} (α = {}): {claim}", set.set_size, set.certificate, set.alpha);
        print_hits(&set.hits);
        return Ok(());
    }
    let hits: Vec<engram_rag::Hit> = match (&local, remote) {
        (Some(local), _) => local.rag.search(&args.query, &filter, args.mode, args.k)?,
        (None, Some(body)) => serde_json::from_value(via_daemon(paths, "/v1/search", body)?["hits"].take())?,
        (None, None) => unreachable!("one of the two is set"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        print_hits(&hits);
    }
    Ok(())
}

fn print_hits(hits: &[engram_rag::Hit]) {
    for (i, hit) in hits.iter().enumerate() {
        let heading = if hit.headings.is_empty() { String::new() } else { format!(" § {}", hit.headings.join(" > ")) };
        println!("{}. {:.4}  {}:{}-{}{heading}", i + 1, hit.score, hit.path, hit.chars[0], hit.chars[1]);
        let preview: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let preview: String = preview.chars().take(200).collect();
        println!("   {preview}");
    }
}

/// `engram reindex`: rebuilds both indexes from the journal.
pub fn reindex(loaded: &Loaded, paths: &Paths) -> anyhow::Result<()> {
    crate::serve::create_private_dir(&paths.data_dir)?;
    let lock = crate::serve::DataDirLock::acquire(&paths.lock_file, &paths.data_dir)?;
    let embedder = Arc::new(crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?);
    let started = std::time::Instant::now();
    Rag::wipe_indexes(&index_dir(paths), &embedder.name, &options(&loaded.config, paths)?)
        .context("cannot remove the indexes")?;
    let local = open_locked(lock, loaded, paths, embedder)?;
    let stats = local.rag.stats()?;
    println!(
        "rebuilt the indexes from the journal in {:.1}s: {} documents, {} chunks (BM25 {}, vectors {})",
        started.elapsed().as_secs_f64(),
        stats.documents,
        stats.chunks,
        stats.bm25_chunks,
        stats.vector_chunks
    );
    Ok(())
}

/// `engram collections`.
pub fn collections(loaded: &Loaded, paths: &Paths, json: bool) -> anyhow::Result<()> {
    let all: Vec<engram_rag::engine::CollectionInfo> = if daemon_running(paths) {
        serde_json::from_value(daemon_call(paths, "GET", "/v1/collections", None)?["collections"].take())?
    } else {
        open_local(loaded, paths)?.rag.collections()?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() {
        println!("no collections yet: engram ingest PATH --collection NAME");
    } else {
        for c in all {
            println!("{}: {} documents, {} chunks, {} chunk changes", c.name, c.documents, c.chunks, c.changes);
        }
    }
    Ok(())
}

/// Reads calibration questions from a JSONL file, naming the line of any error.
pub fn read_questions(path: &Path) -> anyhow::Result<Vec<Question>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut questions = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let question: Question = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a calibration question", path.display(), i + 1))?;
        questions.push(question);
    }
    Ok(questions)
}

/// `engram calibrate`.
pub fn calibrate(loaded: &Loaded, paths: &Paths, args: &CalibrateArgs) -> anyhow::Result<()> {
    let file_questions = args.questions.as_deref().map(read_questions).transpose()?;
    let source = args.questions.as_deref().map(|p| p.display().to_string());
    let mut options = CalibrateOptions {
        alpha: args.alpha,
        score_function: args.score,
        holdout: args.holdout,
        seed: args.seed,
        questions_from: String::new(),
    };
    // Refuse a bad level before an LLM spends minutes writing questions.
    options.validate()?;
    let cert: Certificate = if daemon_running(paths) {
        let body = serde_json::json!({
            "collection": args.collection, "alpha": args.alpha, "score": args.score, "holdout": args.holdout,
            "seed": args.seed, "questions": file_questions, "generate": args.generate, "source": source,
        });
        let mut value = via_daemon(paths, "/v1/calibrate", body)?;
        let generated: Option<engram_rag::questions::Generated> =
            serde_json::from_value(value["generated"].take()).context("the daemon's generated questions")?;
        if let Some(generated) = &generated {
            report_generated(generated, args.save.as_deref())?;
        }
        serde_json::from_value(value["certificate"].take()).context("the daemon's certificate")?
    } else {
        let local = open_local(loaded, paths)?;
        let (questions, questions_from) = match (file_questions, args.generate) {
            (Some(questions), _) => (questions, source.unwrap_or_default()),
            (None, Some(n)) => generate_questions(loaded, paths, &local.rag, args, n as usize)?,
            (None, None) => anyhow::bail!("give --questions FILE.jsonl or --generate N"),
        };
        options.questions_from = questions_from;
        local.rag.calibrate(&args.collection, &questions, &options)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cert)?);
        return Ok(());
    }
    let threshold = cert.min_score.map_or_else(|| "every candidate".to_owned(), |s| format!("score ≥ {s:.4}"));
    println!(
        "{}: collection {} at α = {} from {} questions ({}): {threshold}",
        cert.id,
        cert.collection,
        cert.calibration.alpha,
        cert.calibration.n,
        cert.score_function.as_str()
    );
    if let Some(held) = cert.held_out {
        println!(
            "held out {}: coverage {:.3} (target {:.3}), median set {} chunks, p90 {}",
            held.n,
            held.coverage,
            1.0 - cert.calibration.alpha,
            held.median_set,
            held.p90_set
        );
    }
    Ok(())
}

/// Questions the configured LLM writes about `n` chunks drawn from the
/// collection (see [`engram_rag::questions`]), and how to name their source.
fn generate_questions(
    loaded: &Loaded,
    paths: &Paths,
    rag: &Rag,
    args: &CalibrateArgs,
    n: usize,
) -> anyhow::Result<(Vec<Question>, String)> {
    let sampled = rag.sample_chunks(&args.collection, n, args.seed)?;
    let llm = crate::models::load_llm(&loaded.config, paths).context("cannot load the LLM")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bar = terminal_bar("writing questions", "chunks", sampled.len() as u64);
    let generated = runtime
        .block_on(engram_rag::questions::write_questions(&llm, &sampled, || {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }))
        .context("the LLM failed to write a question")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report_generated(&generated, args.save.as_deref())?;
    let source = generated.source(args.seed);
    Ok((generated.questions, source))
}

/// Says how generation went and writes the questions to `save`, if given.
fn report_generated(generated: &engram_rag::questions::Generated, save: Option<&Path>) -> anyhow::Result<()> {
    eprintln!(
        "{} wrote {} questions about {} sampled chunks ({} replies held no usable question)",
        generated.model,
        generated.questions.len(),
        generated.sampled,
        generated.rejected()
    );
    if let Some(file) = save {
        let mut text = String::new();
        for question in &generated.questions {
            text.push_str(&serde_json::to_string(question)?);
            text.push('\n');
        }
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// `engram certificates`.
pub fn certificates(loaded: &Loaded, paths: &Paths, command: &CertificatesCommand) -> anyhow::Result<()> {
    let questions = match command {
        CertificatesCommand::Check { questions, .. } => Some(read_questions(questions)?),
        _ => None,
    };
    // Through the running daemon, or on the data directory.
    let daemon = daemon_running(paths);
    let local = if daemon { None } else { Some(open_local(loaded, paths)?) };
    match command {
        CertificatesCommand::List { collection, json } => {
            let all: Vec<engram_rag::certify::CertificateStatus> = match &local {
                Some(local) => local.rag.certificates(collection.as_deref())?,
                None => {
                    let route = match collection {
                        Some(c) => format!("/v1/certificates?collection={}", percent_encode(c)),
                        None => "/v1/certificates".to_owned(),
                    };
                    serde_json::from_value(daemon_call(paths, "GET", &route, None)?["certificates"].take())?
                }
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no certificates: engram calibrate --collection NAME --questions FILE.jsonl");
            } else {
                for c in all {
                    let cert = &c.certificate;
                    let state = if c.stale { "STALE" } else { "valid" };
                    println!(
                        "{}  {}  α={}  n={}  {}  {state} ({} chunk changes since)",
                        cert.id,
                        cert.collection,
                        cert.calibration.alpha,
                        cert.calibration.n,
                        cert.score_function.as_str(),
                        c.changes_since
                    );
                }
            }
        }
        CertificatesCommand::Export { id } => {
            let value = match &local {
                Some(local) => serde_json::to_value(local.rag.certificate(id)?)?,
                None => daemon_call(paths, "GET", &format!("/v1/certificates/{}", percent_encode(id)), None)?,
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        CertificatesCommand::Check { id, json, .. } => {
            let questions = questions.unwrap_or_default();
            let report = match &local {
                Some(local) => {
                    let (status, checked) = local.rag.check_certificate(id, &questions)?;
                    engram_api::check_report(id, &status, &checked)
                }
                None => {
                    let route = format!("/v1/certificates/{}/check", percent_encode(id));
                    via_daemon(paths, &route, serde_json::json!({ "questions": questions }))?
                }
            };
            if *json {
                println!("{report:#}");
            } else {
                println!(
                    "{id} on {} questions: coverage {:.3} (target {:.3}), median set {} chunks, p90 {}{}",
                    report["n"],
                    report["coverage"].as_f64().unwrap_or(f64::NAN),
                    report["target"].as_f64().unwrap_or(f64::NAN),
                    report["median_set"],
                    report["p90_set"],
                    if report["stale"] == true { " (the certificate is stale)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// `text` safe in a URL path segment or query value.
fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `engram eval retrieval`.
pub fn eval_retrieval(loaded: &Loaded, paths: &Paths, args: &EvalRetrievalArgs) -> anyhow::Result<()> {
    if args.splits == 0 {
        anyhow::bail!("--splits must be at least 1");
    }
    let beir = engram_rag::beir::Beir::load(&args.beir, args.split.as_deref())?;
    let name = args
        .beir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "beir".to_owned());
    let work = args.work_dir.clone().unwrap_or_else(|| paths.cache_dir.join("eval").join(&name));
    let store = Store::open(&work.join("journal.sqlite3"), &engram_store::StoreOptions::default())?;
    let embedder = crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?;
    // The evaluation corpus stays in its own work directory: never in a
    // configured server's collection.
    let options = embedded_options(&loaded.config);
    let rag = Rag::open(store, &work.join("index"), Arc::new(embedder), options)?;
    let collection: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let options = EvalOptions { splits: args.splits, ..EvalOptions::default() };
    let report = evaluate(&rag, &beir, &collection, &options, &mut progress_bar("ingesting the corpus"))?;
    if let Some(plot) = &args.plot {
        std::fs::write(plot, crate::plot::coverage_svg(&report.curve))
            .with_context(|| format!("cannot write {}", plot.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_eval(&report);
    }
    Ok(())
}

fn print_eval(report: &RetrievalEval) {
    println!(
        "{} queries, {} documents in {} chunks (ingest {:.1}s, {} embedded; search {:.1}s)",
        report.queries,
        report.documents,
        report.chunks,
        report.ingest.seconds,
        report.ingest.embedded,
        report.search_seconds
    );
    println!("\n{:<20} {:>8} {:>11} {:>8}", "retriever", "nDCG@10", "recall@100", "MRR");
    for row in &report.ranking {
        println!("{:<20} {:>8.4} {:>11.4} {:>8.4}", row.retriever, row.ndcg_at_10, row.recall_at_100, row.mrr);
    }
    println!(
        "\nconformal (document level, {} random {:.0}/{:.0} calibration/test splits, {} candidates per list)",
        report.splits,
        report.calibration_share * 100.0,
        (1.0 - report.calibration_share) * 100.0,
        report.candidates
    );
    println!(
        "{:<16} {:>5} {:>7} {:>9} {:>6} {:>10} {:>7}",
        "score", "alpha", "target", "coverage", "±sd", "median set", "p90 set"
    );
    for row in &report.conformal {
        println!(
            "{:<16} {:>5} {:>7.3} {:>9.4} {:>6.3} {:>10} {:>7}",
            row.score_function.as_str(),
            row.alpha,
            row.target,
            row.coverage,
            row.coverage_sd,
            row.median_set,
            row.p90_set
        );
    }
}
