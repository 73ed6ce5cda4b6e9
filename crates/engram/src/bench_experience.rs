//! `engram bench experience`: insight lookup latency at a library of 1,000
//! insights, against its floor in the same run — embedding the task alone,
//! which every lookup must do.
//!
//! The library is synthesized: conditions, explanations and examples built
//! from an operations-research word bank under 48 taxonomy paths, written
//! as events through the journal like any import and indexed by the
//! follower (real embeddings). The tasks are the optimization set's
//! descriptions when `--tasks` names it, else paragraphs of the same bank.
//! A lookup here is what `experience_lookup` runs without the model's
//! applicability check (a model call, measured by `engram bench generate`):
//! candidates by BM25 and vectors, folded from their events, then the
//! lookup recorded with its `retrieved` counts (one fsync'd transaction).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_experience::ops::LookupInsights;
use engram_experience::retrieve::Retriever;
use engram_experience::task::{LookupOptions, lookup};
use engram_experience::{Change, Experience, Provenance, Status, Text};
use engram_index::{Embed, EmbedFn};
use engram_store::{Store, StoreOptions};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::bench::stats::{self, Summary};
use crate::bench_search::ms;

/// Options of `engram bench experience`.
#[derive(Debug, clap::Args)]
pub struct ExperienceBenchArgs {
    /// Insights in the library.
    #[arg(long, default_value_t = 1000)]
    pub insights: usize,
    /// Timed lookups.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Task descriptions to look up with (JSON lines with `description`,
    /// e.g. the optimization set); synthesized when absent.
    #[arg(long, value_name = "FILE")]
    pub tasks: Option<std::path::PathBuf>,
}

const THINGS: &[&str] = &[
    "products",
    "machines",
    "trucks",
    "warehouses",
    "workers",
    "shifts",
    "crops",
    "factories",
    "routes",
    "nurses",
    "projects",
    "investments",
    "ingredients",
    "batteries",
    "pipelines",
    "flights",
    "classrooms",
    "servers",
    "vaccines",
    "containers",
    "generators",
    "stores",
    "suppliers",
    "vehicles",
];
const LIMITS: &[&str] = &[
    "one storage capacity",
    "a shared budget",
    "a labour-hour limit",
    "a minimum demand",
    "a maximum ratio",
    "an integer count",
    "a fixed setup cost",
    "a lower bound per period",
    "a flow balance",
    "a blending percentage",
    "a time window",
    "an either-or choice",
    "a transport capacity",
    "a nutrient requirement",
    "a staffing level",
    "an inventory carried between months",
];
const MISTAKES: &[&str] = &[
    "gives each item the whole limit",
    "forgets the units",
    "treats counts as continuous",
    "drops the setup cost",
    "sums over the wrong index",
    "mixes percentages and fractions",
    "omits the initial stock",
    "uses the selling price as profit",
    "ignores the last period",
    "double counts the shared resource",
];
const AREAS: &[&str] = &["formulation", "modeling", "data", "objective"];
const PARTS: &[&str] = &["constraints", "variables", "bounds", "costs"];
const TOPICS: &[&str] = &["capacity", "integrality", "balance", "ratios"];

fn insight_text(rng: &mut StdRng) -> anyhow::Result<Text> {
    let pick = |rng: &mut StdRng, words: &[&'static str]| -> anyhow::Result<&'static str> {
        words.choose(rng).copied().context("empty word list")
    };
    let (a, b, limit, mistake) = (pick(rng, THINGS)?, pick(rng, THINGS)?, pick(rng, LIMITS)?, pick(rng, MISTAKES)?);
    Ok(Text {
        taxonomy: format!("{}/{}/{}", pick(rng, AREAS)?, pick(rng, PARTS)?, pick(rng, TOPICS)?),
        condition: format!("The {a} and the {b} are bound by {limit} that the model must state once"),
        explanation: format!("A first model often {mistake}, which changes the optimum."),
        example: format!("Sum the {a} against {limit}; check the {b} separately."),
    })
}

fn task_text(rng: &mut StdRng) -> anyhow::Result<String> {
    let mut text = String::new();
    for _ in 0..rng.random_range(4..8) {
        let thing = THINGS.choose(rng).context("empty word list")?;
        let limit = LIMITS.choose(rng).context("empty word list")?;
        let n: u32 = rng.random_range(2..900);
        text.push_str(&format!("The company runs {n} {thing} under {limit}. "));
    }
    text.push_str("How should it plan to maximize its profit?");
    Ok(text)
}

fn row(name: &str, summary: &Summary) {
    println!("{name:<38} {:>6} {:>8} {:>8} {:>8}", summary.n, ms(summary.p50), ms(summary.p95), ms(summary.p99));
}

/// `engram bench experience`.
pub fn experience(loaded: &Loaded, paths: &Paths, args: &ExperienceBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.insights > 0 && args.queries > 0, "--insights and --queries must be at least 1");
    let embedder = Arc::new(crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?);
    let mut rng = stats::rng(0x5EED_1234_ABCD_0017);
    let work = tempfile::Builder::new().prefix("engram-bench-experience").tempdir()?;
    let store = Store::open(&work.path().join("journal.sqlite3"), &StoreOptions::default())?;
    let experience = Experience::new(store.clone());
    let mut changes = Vec::with_capacity(args.insights);
    for _ in 0..args.insights {
        let text = insight_text(&mut rng)?;
        changes.push((None, Change::Created { text, status: Status::Active, provenance: Provenance::default() }));
    }
    let started = Instant::now();
    // One import-sized transaction per 100 insights.
    for batch in changes.chunks(100) {
        experience.record("bench", batch.to_vec())?;
    }
    let model = embedder.clone();
    let embed: Arc<dyn Embed> =
        Arc::new(EmbedFn::new(embedder.name.clone(), embedder.dim(), move |texts: &[&str]| Ok(model.embed(texts)?)));
    let retriever =
        Arc::new(Retriever::open(store, &work.path().join("index"), embed, &engram_index::VectorBackend::Edge)?);
    println!(
        "{} insights written and indexed in {:.1}s (embedder {})",
        args.insights,
        started.elapsed().as_secs_f64(),
        embedder.name
    );

    let tasks: Vec<String> = match &args.tasks {
        Some(file) => {
            let tasks = engram_experience::eval::read_tasks(file)?;
            (0..args.queries).map(|i| tasks[i % tasks.len()].text.clone()).collect()
        }
        None => (0..args.queries).map(|_| task_text(&mut rng)).collect::<anyhow::Result<_>>()?,
    };
    let words: usize = tasks.iter().map(|t| t.split_whitespace().count()).sum::<usize>() / tasks.len();
    println!(
        "{} lookups, tasks of {words} words on average ({})",
        tasks.len(),
        match &args.tasks {
            Some(file) => file.display().to_string(),
            None => "synthesized".to_owned(),
        }
    );
    println!("{:<38} {:>6} {:>8} {:>8} {:>8}", "", "n", "p50 ms", "p95 ms", "p99 ms");

    let time = |f: &mut dyn FnMut(&str) -> anyhow::Result<()>| -> anyhow::Result<Summary> {
        let mut samples = Vec::with_capacity(tasks.len());
        for task in tasks.iter().take(20) {
            f(task)?;
        }
        for task in &tasks {
            let t0 = Instant::now();
            f(task)?;
            samples.push(t0.elapsed());
        }
        Summary::of(samples).context("nothing measured")
    };
    let floor = time(&mut |task| {
        embedder.embed(&[task])?;
        Ok(())
    })?;
    row("embedding the task alone (floor)", &floor);
    let candidates = time(&mut |task| {
        retriever.candidates(task, None, 8)?;
        Ok(())
    })?;
    row("candidates (BM25 + vectors + fold)", &candidates);
    // The configured lookup, less the model's check (a model call).
    let options =
        LookupOptions { check: false, ..engram_services::experience::lookup_options(&loaded.config.experience) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let recorded = time(&mut |task| {
        runtime.block_on(lookup(&experience, &retriever, None, &LookupInsights::new(task), &options))?;
        Ok(())
    })?;
    row("lookup, recorded (no model check)", &recorded);
    let over = |s: &Summary| s.p95.as_secs_f64() / floor.p95.as_secs_f64().max(1e-9);
    println!(
        "\np95: candidates {:.2}× the embedding alone, a recorded lookup {:.2}× (bar: a recorded lookup ≤ 20 ms: {})",
        over(&candidates),
        over(&recorded),
        if recorded.p95.as_secs_f64() <= 0.020 { "met" } else { "NOT met" }
    );
    Ok(())
}
