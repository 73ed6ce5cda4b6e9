//! `engram ingest | search | reindex | calibrate | certificates | collections`
//! and `engram eval retrieval`: argument parsing and output for retrieval's
//! operations ([`engram_rag::ops`]), sent through the client to the running
//! daemon or, when none runs, to the same services in this process.

use std::path::{Path, PathBuf};

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_ops::{CollectionName, TenantId};
use engram_rag::certify::{Question, ScoreFunction, Stratum};
use engram_rag::eval::RetrievalEval;
use engram_rag::ops::{
    Calibrate, CalibrateProgress, Certificate, Certificates, CheckCertificate, Collections, Ingest, Search,
    SearchResponse,
};
use engram_rag::{IngestReport, Mode, Progress};
use engram_services::rag::EvalRequest;

/// `engram ingest` options.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files and folders to ingest (Markdown, text, HTML, source code).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The collection to ingest into (created on first use).
    #[arg(long, short)]
    pub collection: CollectionName,
    /// The tenant the documents belong to.
    #[arg(long)]
    pub tenant: Option<TenantId>,
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
    pub collection: Option<CollectionName>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Results to return [default: 5].
    #[arg(long, short)]
    pub k: Option<usize>,
    /// bm25, dense or hybrid [default: hybrid].
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Return every chunk the collection's certificate admits at this
    /// miscoverage level (see `engram calibrate`).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// With --alpha: at most this many chunks (a cut set claims nothing) [default: 50].
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// With --alpha: at most this many chunk tokens (a cut set claims nothing).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `engram calibrate` options.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The collection to certify.
    #[arg(long, short)]
    pub collection: CollectionName,
    /// The part of the collection to certify: the certificate claims only
    /// for searches with exactly this filter.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Miscoverage level α in (0, 1): the evidence is in the set with
    /// probability at least 1 − α [default: 0.1].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Calibration questions, one JSON object per line:
    /// {"question": "...", "gold": [chunk ids]} or {"question": "...", "gold_paths": ["path"]}.
    #[arg(long, value_name = "FILE.jsonl", required_unless_present = "generate", conflicts_with = "generate")]
    pub questions: Option<PathBuf>,
    /// Instead of a file: have the LLM write N questions, one per chunk
    /// drawn at random from the collection (that chunk is the gold).
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,
    /// With --generate: also write the questions to this JSONL file (to
    /// review, edit, and pass back with --questions).
    #[arg(long, value_name = "FILE.jsonl", requires = "generate")]
    pub save: Option<PathBuf>,
    /// The score function (the same one scores queries at this level)
    /// [default: hybrid_min_max].
    #[arg(long, value_parser = parse_score)]
    pub score: Option<ScoreFunction>,
    /// Share of the questions held out to measure coverage [default: 0.2].
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Seed of the held-out split and of the chunks drawn for --generate [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
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
        collection: Option<CollectionName>,
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
    /// Also ingest the corpus split into N tenants and certify each on its
    /// own questions (`engram calibrate --tenant`), reporting held-out
    /// coverage with its interval.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tenants: usize,
    /// Calibrate on these questions (calibration JSONL, e.g. LLM-written)...
    #[arg(long, value_name = "FILE.jsonl", requires = "test_on")]
    pub calibrate_on: Option<PathBuf>,
    /// ...and measure on these (e.g. real users' questions).
    #[arg(long, value_name = "FILE.jsonl", requires = "calibrate_on")]
    pub test_on: Option<PathBuf>,
    /// Print every figure as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A filter besides the collection: what `engram search` searches and
/// `engram calibrate` certifies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this tenant's documents.
    #[arg(long)]
    pub tenant: Option<TenantId>,
    /// Only documents whose path starts with this.
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// Only documents with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only documents ingested at or after this time (Unix seconds).
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<i64>,
    /// Only documents ingested before this time (Unix seconds).
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<i64>,
}

impl FilterArgs {
    /// `--since`/`--until` as a `[from, to)` range, when either is given.
    fn time(&self) -> Option<[i64; 2]> {
        (self.since.is_some() || self.until.is_some())
            .then(|| [self.since.unwrap_or(i64::MIN), self.until.unwrap_or(i64::MAX)])
    }

    /// As a certificate's stratum.
    fn stratum(&self) -> Stratum {
        Stratum {
            tenant: self.tenant.clone(),
            path_prefix: self.path_prefix.clone(),
            tags: self.tags.clone(),
            time: self.time(),
        }
    }
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

/// Ingest progress as a bar on a terminal, nothing otherwise.
fn progress_bar(label: &'static str) -> impl FnMut(&Progress) {
    let bar = crate::connect::terminal_bar(label, "documents", 0);
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

/// `engram ingest`.
pub fn ingest(loaded: &Loaded, paths: &Paths, args: &IngestArgs) -> anyhow::Result<()> {
    // The daemon has its own working directory.
    let absolute = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display())))
        .collect::<anyhow::Result<Vec<PathBuf>>>()?;
    let request = Ingest {
        collection: args.collection.clone(),
        tenant: args.tenant.clone(),
        tags: args.tags.clone(),
        paths: absolute,
        documents: Vec::new(),
        stream: true,
    };
    let report = crate::connect::run(loaded, paths, |client| async move {
        let mut bar = progress_bar("ingesting");
        Ok(client.call_streaming(&request, |event| bar(&event)).await?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// `engram search`.
pub fn search(loaded: &Loaded, paths: &Paths, args: &SearchArgs) -> anyhow::Result<()> {
    let mut request = Search::new(args.query.clone());
    request.collection = args.collection.clone();
    let stratum = args.filter.stratum();
    request.tenant = stratum.tenant;
    request.path_prefix = stratum.path_prefix;
    request.tags = stratum.tags;
    request.time = stratum.time;
    request.k = args.k.unwrap_or(request.k);
    request.mode = args.mode.unwrap_or(request.mode);
    request.alpha = args.alpha;
    request.max_chunks = args.max_chunks.unwrap_or(request.max_chunks);
    request.max_tokens = args.max_tokens;
    let response = crate::connect::call(loaded, paths, &request)?;
    match response {
        SearchResponse::Certified(set) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&set)?);
                return Ok(());
            }
            let claim = match (set.coverage_guarantee, set.pac) {
                (Some(p), Some(pac)) => format!(
                    "the evidence is in this set with probability ≥ {p:.2} (this certificate: ≥ {:.3} with \
                     probability {:.2} over its calibration questions)",
                    pac.coverage,
                    1.0 - pac.delta
                ),
                (Some(p), None) => format!("the evidence is in this set with probability ≥ {p:.2}"),
                (None, _) => {
                    let why: Vec<&str> = set.no_guarantee.iter().map(|r| r.describe()).collect();
                    format!("no coverage claim: {}", why.join("; "))
                }
            };
            println!("{} chunk(s) under certificate {} (α = {}): {claim}", set.set_size, set.certificate, set.alpha);
            let label = if set.coverage_guarantee.is_some() { "guarantee for" } else { "certificate for" };
            println!("{label}: {}", set.population);
            print_hits(&set.hits);
        }
        SearchResponse::Ranked { hits, .. } => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&hits)?);
            } else {
                print_hits(&hits);
            }
        }
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
    let done = engram_services::rag::reindex(&loaded.config, paths)?;
    let stats = done.stats;
    println!(
        "rebuilt the indexes from the journal in {:.1}s: {} documents, {} chunks (BM25 {}, vectors {}); memory: {} turns (BM25 {}, vectors {})",
        done.elapsed.as_secs_f64(),
        stats.documents,
        stats.chunks,
        stats.bm25_chunks,
        stats.vector_chunks,
        done.memory.bm25_documents.max(done.memory.vector_documents),
        done.memory.bm25_documents,
        done.memory.vector_documents
    );
    Ok(())
}

/// `engram collections`.
pub fn collections(loaded: &Loaded, paths: &Paths, json: bool) -> anyhow::Result<()> {
    let all = crate::connect::call(loaded, paths, &Collections::default())?.collections;
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

/// `engram calibrate`.
pub fn calibrate(loaded: &Loaded, paths: &Paths, args: &CalibrateArgs) -> anyhow::Result<()> {
    let mut request = Calibrate::new(args.collection.clone());
    request.stratum = args.filter.stratum();
    request.alpha = args.alpha.unwrap_or(request.alpha);
    request.score = args.score.unwrap_or(request.score);
    request.holdout = args.holdout.unwrap_or(request.holdout);
    request.seed = args.seed.unwrap_or(request.seed);
    request.generate = args.generate;
    request.stream = true;
    if let Some(file) = &args.questions {
        request.questions = Some(Question::read_jsonl(file)?);
        request.source = Some(file.display().to_string());
    }
    let answer = crate::connect::run(loaded, paths, |client| async move {
        let mut bar = None;
        let answer = client
            .call_streaming(&request, |CalibrateProgress::Questions { done, total }| {
                let bar = bar
                    .get_or_insert_with(|| crate::connect::terminal_bar("writing questions", "chunks", total as u64));
                if let Some(bar) = bar {
                    bar.set_position(done as u64);
                }
            })
            .await;
        if let Some(Some(bar)) = bar {
            bar.finish_and_clear();
        }
        Ok(answer?)
    })?;
    if let Some(generated) = &answer.generated {
        report_generated(generated, args.save.as_deref())?;
    }
    if let Some(advice) = &answer.advice {
        eprintln!("warning: {advice}");
    }
    let cert = &answer.certificate;
    if args.json {
        println!("{}", serde_json::to_string_pretty(cert)?);
        return Ok(());
    }
    let threshold = cert.min_score.map_or_else(|| "every candidate".to_owned(), |s| format!("score ≥ {s:.4}"));
    println!(
        "{}: collection {} ({}) at α = {} from {} questions ({}): {threshold}",
        cert.id,
        cert.collection,
        cert.stratum.describe(),
        cert.calibration.alpha,
        cert.calibration.n,
        cert.score_function.as_str()
    );
    if let Some(pac) = cert.pac {
        println!(
            "coverage ≥ {:.3} on average over calibrations; this one's is ≥ {:.3} with probability {:.2}",
            cert.target(),
            pac.coverage,
            1.0 - pac.delta
        );
    }
    if let Some(held) = cert.held_out {
        println!(
            "held out {}: coverage {:.3} [{:.3}, {:.3}] (target {:.3}), median set {} chunks, p90 {}",
            held.n,
            held.coverage,
            held.interval[0],
            held.interval[1],
            cert.target(),
            held.median_set,
            held.p90_set
        );
    }
    println!("guarantee for: {}", cert.population());
    Ok(())
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
    match command {
        CertificatesCommand::List { collection, json } => {
            let request = Certificates { collection: collection.clone() };
            let all = crate::connect::call(loaded, paths, &request)?.certificates;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no certificates: engram calibrate --collection NAME --questions FILE.jsonl");
            } else {
                for c in all {
                    let cert = &c.certificate;
                    let state = match (c.stale, c.approximate) {
                        (true, _) => format!("STALE: {}", c.stale_because.as_deref().unwrap_or("")),
                        (false, true) => format!(
                            "approximate ({} of {} allowed chunk changes since)",
                            c.changes_since, c.allowed_changes
                        ),
                        (false, false) => "exact (no change since)".to_owned(),
                    };
                    println!(
                        "{}  {}  {}  α={}  n={}  {}  {state}",
                        cert.id,
                        cert.collection,
                        cert.stratum.describe(),
                        cert.calibration.alpha,
                        cert.calibration.n,
                        cert.score_function.as_str(),
                    );
                }
            }
        }
        CertificatesCommand::Export { id } => {
            let request = Certificate { id: id.clone() };
            let status = crate::connect::call(loaded, paths, &request)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        CertificatesCommand::Check { id, questions, json } => {
            let request = CheckCertificate { id: id.clone(), questions: Question::read_jsonl(questions)? };
            let report = crate::connect::call(loaded, paths, &request)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{id} on {} questions: coverage {:.3} [{:.3}, {:.3}] (target {:.3}), median set {} chunks, p90 {}{}",
                    report.n,
                    report.coverage,
                    report.interval[0],
                    report.interval[1],
                    report.target,
                    report.median_set,
                    report.p90_set,
                    match (report.stale, report.approximate) {
                        (true, _) => " (the certificate is stale)",
                        (false, true) => " (the collection changed since: approximate)",
                        (false, false) => "",
                    }
                );
                println!("guarantee for: {}", report.population);
            }
        }
    }
    Ok(())
}

/// `engram eval retrieval`.
pub fn eval_retrieval(loaded: &Loaded, paths: &Paths, args: &EvalRetrievalArgs) -> anyhow::Result<()> {
    let request = EvalRequest {
        beir: args.beir.clone(),
        split: args.split.clone(),
        splits: args.splits,
        work_dir: args.work_dir.clone(),
        tenants: args.tenants,
        shift: args.calibrate_on.clone().zip(args.test_on.clone()),
    };
    let report = engram_services::rag::eval_retrieval(
        &loaded.config,
        paths,
        &request,
        &mut progress_bar("ingesting the corpus"),
    )?;
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
        "{:<16} {:>5} {:>7} {:>9} {:>6} {:>15} {:>23} {:>10} {:>7} {:>9}",
        "score",
        "alpha",
        "target",
        "coverage",
        "±sd",
        "split range",
        "first split [95% CI]",
        "median set",
        "p90 set",
        "unbounded"
    );
    for row in &report.conformal {
        println!(
            "{:<16} {:>5} {:>7.3} {:>9.4} {:>6.3} {:>15} {:>23} {:>10} {:>7} {:>9}",
            row.score_function.as_str(),
            row.alpha,
            row.target,
            row.coverage,
            row.coverage_sd,
            format!("[{:.3}, {:.3}]", row.spread[0], row.spread[1]),
            format!("{:.3} [{:.3}, {:.3}]", row.first_split.0, row.first_split.1[0], row.first_split.1[1]),
            row.median_set,
            row.p90_set,
            format!("{}/{}", row.unbounded_splits, report.splits)
        );
    }
    for (title, rows) in [
        ("each tenant's own certificate (engram calibrate --tenant), on its held-out half", &report.tenants),
        ("calibrated on one question set, measured on another", &report.shift),
    ] {
        if rows.is_empty() {
            continue;
        }
        println!("\n{title} (hybrid_min_max; sets in chunks; 95% Clopper–Pearson intervals)");
        println!(
            "{:<28} {:>5} {:>7} {:>6} {:>9} {:>5} {:>9} {:>17} {:>10} {:>7}",
            "measured on", "alpha", "target", "n cal", "PAC", "n", "coverage", "interval", "median set", "p90 set"
        );
        for row in rows {
            let label: String = row.label.chars().rev().take(28).collect::<Vec<_>>().into_iter().rev().collect();
            println!(
                "{:<28} {:>5} {:>7.3} {:>6} {:>9} {:>5} {:>9.4} {:>17} {:>10} {:>7}",
                label,
                row.alpha,
                row.target,
                row.calibrated_on,
                row.pac.map_or_else(|| "-".to_owned(), |p| format!("{:.3}", p.coverage)),
                row.n,
                row.coverage,
                format!("[{:.3}, {:.3}]", row.interval[0], row.interval[1]),
                row.median_set,
                row.p90_set
            );
        }
    }
}
