//! `engram bench memory`: HEMA memory's three latency bars, each against
//! its peer in the same run.
//!
//! 1. **Acknowledgement while an ingest runs**: appends on the journal a
//!    retrieval ingest (real embedding) writes to at the same time, with
//!    memory's indexing following behind, against appends on the idle
//!    journal.
//! 2. **Recall at scale**: turns synthesized into many conversations —
//!    Zipf-worded sentences and short chatter; a few hundred sentences are
//!    embedded for real and every turn's vector is a normalized mix of them
//!    plus noise, cached under its document before indexing, so the
//!    journal, tantivy and qdrant-edge do a real append's work except the
//!    embedding. Each query is a few words of one turn, embedded for real
//!    inside the timed recall; a hit is that turn among the first 20.
//! 3. **Forgetting**: every conversation archived to half its turns by
//!    retention, then the same queries against the full memory's figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_index::VectorBackend::Edge;
use engram_memory::{Memory, NewTurn, RecallOptions, Retention, Scope};
use engram_ops::{ConversationId, TenantId};
use engram_store::{Store, StoreOptions};
use rand::Rng;
use rand::rngs::StdRng;

use crate::bench::stats::{self, Summary};
use crate::bench_search::{Vocabulary, ms};

/// Options of `engram bench memory`.
#[derive(Debug, clap::Args)]
pub struct MemoryBenchArgs {
    /// Turns stored for the recall and forgetting figures.
    #[arg(long, default_value_t = 100_000)]
    pub turns: usize,
    /// Conversations they are spread over.
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// Timed recalls (before and after forgetting).
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Timed appends (idle, then during the ingest).
    #[arg(long, default_value_t = 400)]
    pub appends: usize,
    /// Passages the concurrent ingest embeds and indexes.
    #[arg(long, default_value_t = 3000)]
    pub ingest: usize,
    /// Sentences embedded for real, the basis of the synthetic vectors.
    #[arg(long, default_value_t = 300)]
    pub embedded: usize,
}

/// What people say between the sentences that matter.
const CHATTER: &[&str] = &[
    "ok",
    "haha yes",
    "sure, sounds good",
    "thanks!",
    "right",
    "I see",
    "lol",
    "mm hm",
    "nice",
    "yeah totally",
    "oh wow",
    "good night",
];

/// A sentence of `words` Zipf-drawn words.
fn sentence(vocabulary: &Vocabulary, rng: &mut StdRng, words: usize) -> String {
    (0..words).map(|_| vocabulary.draw(rng)).collect::<Vec<_>>().join(" ")
}

/// A unit vector: 0.7 of `a`, 0.3 of `b`, and noise.
fn mix(a: &[f32], b: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let mut vector: Vec<f32> =
        a.iter().zip(b).map(|(x, y)| 0.7 * x + 0.3 * y + 0.05 * (rng.random::<f32>() - 0.5)).collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::EPSILON);
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}

fn scope(n: usize) -> anyhow::Result<Scope> {
    Ok(Scope {
        tenant: Some(TenantId::new(format!("bench-{}", n % 10))?),
        conversation: ConversationId::new(format!("c{n}"))?,
    })
}

fn row(name: &str, summary: &Summary) {
    println!("{name:<34} {:>6} {:>8} {:>8} {:>8}", summary.n, ms(summary.p50), ms(summary.p95), ms(summary.p99));
}

/// `engram bench memory`.
pub fn memory(loaded: &Loaded, paths: &Paths, args: &MemoryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.queries > 0 && args.appends > 0 && args.embedded > 1 && args.conversations > 0,
        "--queries, --appends and --conversations must be ≥ 1, --embedded ≥ 2"
    );
    anyhow::ensure!(args.turns >= 4 * args.conversations, "--turns must be at least 4 per conversation");
    let embedder = Arc::new(crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?);
    let mut rng = stats::rng(0x5EED_1234_ABCD_0002);
    let vocabulary = Vocabulary::new(30_000, &mut rng);
    let work = tempfile::Builder::new().prefix("engram-bench-memory").tempdir()?;
    println!("{:<34} {:>6} {:>8} {:>8} {:>8}", "", "n", "p50 ms", "p95 ms", "p99 ms");

    // 1. Acknowledgement, idle and while an ingest writes to the same journal.
    {
        let dir = work.path().join("ack");
        let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default())?;
        let memory = Arc::new(Memory::open(
            store.clone(),
            &dir.join("memory"),
            embedder.clone(),
            &Edge,
            RecallOptions::default(),
        )?);
        let rag = engram_rag::Rag::open(store, &dir.join("rag"), embedder.clone(), engram_rag::RagOptions::default())?;
        let passages: Vec<String> = (0..args.ingest).map(|_| sentence(&vocabulary, &mut rng, 40)).collect();
        let texts: Vec<String> = (0..2 * args.appends).map(|_| sentence(&vocabulary, &mut rng, 12)).collect();
        let chat = scope(0)?;
        // Memory's indexing follows each append, as in the daemon.
        let (appended, follow) = std::sync::mpsc::channel::<()>();
        let follower = std::thread::spawn({
            let memory = memory.clone();
            move || -> anyhow::Result<()> {
                while follow.recv().is_ok() {
                    while follow.try_recv().is_ok() {}
                    memory.catch_up()?;
                }
                Ok(())
            }
        });
        let append = |text: &String| -> anyhow::Result<Duration> {
            let started = Instant::now();
            memory.append(&chat, NewTurn::new("user", text.as_str()))?;
            let took = started.elapsed();
            let _ = appended.send(());
            Ok(took)
        };
        let idle = texts[..args.appends].iter().map(append).collect::<anyhow::Result<Vec<_>>>()?;
        let ingesting = Arc::new(AtomicBool::new(true));
        // The ingest says when its first batch is written (it embeds first).
        let (writing, written) = std::sync::mpsc::channel::<()>();
        let ingest = std::thread::spawn({
            let ingesting = ingesting.clone();
            move || -> anyhow::Result<engram_rag::IngestReport> {
                let docs = passages
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| {
                        engram_rag::NewDocument::from_text(format!("p-{i}"), text, engram_rag::chunk::Format::Text)
                    })
                    .collect();
                let target = engram_rag::Target::collection("bench")?;
                let mut signal = Some(writing);
                let mut progress = |event: &engram_rag::Progress| {
                    if matches!(event, engram_rag::Progress::Documents { .. }) {
                        signal.take().map(|s| s.send(()));
                    }
                    std::ops::ControlFlow::Continue(())
                };
                let report = rag.ingest_documents(&target, docs, engram_rag::Unlisted::Keep, &mut progress);
                ingesting.store(false, Ordering::Relaxed);
                Ok(report?)
            }
        });
        // A closed channel: the ingest ended (or failed) before writing.
        let _ = written.recv();
        let mut during = Vec::with_capacity(args.appends);
        for text in &texts[args.appends..] {
            if !ingesting.load(Ordering::Relaxed) {
                break;
            }
            during.push(append(text)?);
        }
        let report = ingest.join().map_err(|_| anyhow::anyhow!("the ingest panicked"))??;
        drop(appended);
        follower.join().map_err(|_| anyhow::anyhow!("the follower panicked"))??;
        let idle = Summary::of(idle).context("no idle append")?;
        let during = Summary::of(during).context("the ingest ended before an append: raise --ingest")?;
        row("append ack, idle journal", &idle);
        row("append ack, during ingest", &during);
        println!(
            "  ingest alongside: {} chunks in {:.1}s; ack p95 during / idle = {:.2}x",
            report.chunks_written,
            report.seconds,
            during.p95.as_secs_f64() / idle.p95.as_secs_f64().max(1e-9)
        );
    }

    // 2. Recall at scale.
    let dir = work.path().join("recall");
    let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default())?;
    let memory = Memory::open(store, &dir.join("memory"), embedder.clone(), &Edge, RecallOptions::default())?;
    let base: Vec<String> = (0..args.embedded).map(|_| sentence(&vocabulary, &mut rng, 12)).collect();
    let base_vectors = embedder.embed(&base)?;
    let chatter_vectors = embedder.embed(CHATTER)?;
    let per_conversation = args.turns / args.conversations;
    let built = Instant::now();
    let mut queries = Vec::with_capacity(args.queries);
    for n in 0..args.conversations {
        let chat = scope(n)?;
        let mut previous: Option<String> = None;
        let mut seeded = Vec::with_capacity(per_conversation);
        let mut said = Vec::with_capacity(per_conversation);
        for i in 0..per_conversation {
            let speaker = if i % 2 == 0 { "ana" } else { "ben" };
            let (text, vector) = if rng.random::<f64>() < 0.3 {
                let c = rng.random_range(0..CHATTER.len());
                (CHATTER[c].to_owned(), chatter_vectors[c].clone())
            } else {
                let (a, b) = (rng.random_range(0..base.len()), rng.random_range(0..base.len()));
                let words = rng.random_range(6..30);
                (sentence(&vocabulary, &mut rng, words), mix(&base_vectors[a], &base_vectors[b], &mut rng))
            };
            seeded.push((engram_memory::document_text(previous.as_deref(), speaker, &text), vector));
            said.push((speaker, text.clone()));
            previous = Some(text);
        }
        memory.put_embeddings(&seeded)?;
        for (i, (speaker, text)) in said.iter().enumerate() {
            memory.append(&chat, NewTurn::new(*speaker, text.as_str()))?;
            // Questions are about what was said, chatter aside.
            if text.split(' ').count() >= 6 && rng.random::<f64>() < args.queries as f64 / args.turns as f64 * 1.6 {
                let words: Vec<&str> = text.split(' ').collect();
                let query: Vec<&str> = (0..4).map(|_| words[rng.random_range(0..words.len())]).collect();
                queries.push((n, i as u64, query.join(" ")));
            }
        }
    }
    let journaled = built.elapsed();
    let indexing = Instant::now();
    memory.catch_up()?;
    println!(
        "\n{} turns in {} conversations: journal {:.1}s, indexes {:.1}s",
        per_conversation * args.conversations,
        args.conversations,
        journaled.as_secs_f64(),
        indexing.elapsed().as_secs_f64()
    );
    queries.truncate(args.queries);
    let recall_all = |memory: &Memory| -> anyhow::Result<(Summary, usize)> {
        for (n, _, query) in queries.iter().take(10) {
            memory.recall(&scope(*n)?, query, 20, None)?;
        }
        let mut latencies = Vec::with_capacity(queries.len());
        let mut hits = 0;
        for (n, ordinal, query) in &queries {
            let chat = scope(*n)?;
            let started = Instant::now();
            let recalled = memory.recall(&chat, query, 20, None)?;
            latencies.push(started.elapsed());
            hits += usize::from(recalled.turns.iter().any(|r| r.turn.ordinal == *ordinal));
        }
        Ok((Summary::of(latencies).context("no query was timed")?, hits))
    };
    let (full, full_hits) = recall_all(&memory)?;
    row(&format!("recall@20, {} turns", per_conversation * args.conversations), &full);

    // 3. Forgetting to half capacity, by retention.
    let retention = Retention {
        capacity: per_conversation / 2,
        half_life_turns: loaded.config.memory.half_life_turns as f64,
        keep_recent: loaded.config.memory.recent_turns,
    };
    let started = Instant::now();
    let mut archived = 0;
    for n in 0..args.conversations {
        archived += memory.archive_over_capacity(&scope(n)?, &retention)?.len();
    }
    let archiving = started.elapsed();
    let (half, half_hits) = recall_all(&memory)?;
    row(&format!("recall@20, forgotten to {} a chat", retention.capacity), &half);
    let share = |hits: usize| hits as f64 / queries.len() as f64;
    println!(
        "  archived {archived} turns in {:.1}s; recall p95 {:+.0}%, p50 {:+.0}%; hit@20 {:.3} -> {:.3} ({:+.1} points)",
        archiving.as_secs_f64(),
        (half.p95.as_secs_f64() / full.p95.as_secs_f64() - 1.0) * 100.0,
        (half.p50.as_secs_f64() / full.p50.as_secs_f64() - 1.0) * 100.0,
        share(full_hits),
        share(half_hits),
        (share(half_hits) - share(full_hits)) * 100.0
    );
    println!(
        "\n(recall = query embedding + BM25 and dense top-{} within the conversation + fusion + neighbours from the journal)",
        RecallOptions::default().candidates
    );
    Ok(())
}
