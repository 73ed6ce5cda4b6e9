//! `engram bench search`: hybrid search latency at corpus sizes past what
//! can be embedded on a laptop in minutes, and ingest throughput.
//!
//! The corpus is synthesized: passages of Zipf-distributed words (so BM25
//! posting lists look like a natural language's), each under one chunk.
//! A few hundred passages are embedded for real; every chunk's vector is a
//! normalized mix of two of those plus noise, stored under the chunk's
//! content hash before ingesting, so the journal, tantivy and qdrant-edge
//! do exactly the work of a real ingest except the embedding. Queries are
//! embedded for real, inside the timed search.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use engram_config::{Loaded, Paths};
use engram_rag::chunk::Format;
use engram_rag::chunk_hash;
use engram_rag::{Filter, Mode, NewDocument, Rag, RagOptions, Target, Unlisted};
use engram_store::{Store, StoreOptions};
use rand::Rng;
use rand::rngs::StdRng;

use crate::bench::stats::{self, Summary};

/// Options of `engram bench search`.
#[derive(Debug, clap::Args)]
pub struct SearchBenchArgs {
    /// Corpus sizes in chunks, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub sizes: Vec<usize>,
    /// Timed queries per size and mode.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Passages embedded for real (for ingest throughput and as the basis
    /// of the synthetic vectors).
    #[arg(long, default_value_t = 300)]
    pub embedded: usize,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

/// Pronounceable pseudo-words, ranked: word `r` is drawn with weight 1/(r+1).
pub(crate) struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    pub(crate) fn new(size: usize, rng: &mut StdRng) -> Self {
        const ONSETS: &[&str] =
            &["b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "pl"];
        const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(size);
        while words.len() < size {
            let syllables = rng.random_range(1..=3);
            let word: String = (0..syllables)
                .map(|_| {
                    format!(
                        "{}{}",
                        ONSETS[rng.random_range(0..ONSETS.len())],
                        VOWELS[rng.random_range(0..VOWELS.len())]
                    )
                })
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (0..size)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    pub(crate) fn draw(&self, rng: &mut StdRng) -> &str {
        let target = rng.random::<f64>() * self.cumulative.last().copied().unwrap_or(1.0);
        let index = self.cumulative.partition_point(|c| *c < target).min(self.words.len() - 1);
        &self.words[index]
    }

    fn passage(&self, rng: &mut StdRng) -> String {
        let words = rng.random_range(20..50);
        (0..words).map(|_| self.draw(rng)).collect::<Vec<_>>().join(" ")
    }
}

/// `text` cut at a word so that it stays one chunk (no embedding needed for
/// its stored vector to match).
fn one_chunk(text: &str, embedder: &engram_models::Embedder) -> String {
    let mut words: Vec<&str> = text.split(' ').collect();
    let limit = RagOptions::default().chunk.target_tokens - 16;
    loop {
        let joined = words.join(" ");
        if words.len() <= 1 || embedder.count_tokens(&joined).unwrap_or(usize::MAX) <= limit {
            return joined;
        }
        let over = embedder.count_tokens(&joined).unwrap_or(usize::MAX).saturating_sub(limit);
        words.truncate(words.len().saturating_sub((over / 3).max(1)));
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// `engram bench search`.
pub fn search(loaded: &Loaded, paths: &Paths, args: &SearchBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.queries > 0 && args.embedded > 1, "--queries must be ≥ 1 and --embedded ≥ 2");
    let embedder = Arc::new(crate::models::load_embedder(&loaded.config, paths).context("cannot load the embedder")?);
    let mut rng = stats::rng(0x5EED_1234_ABCD_0001);
    let vocabulary = Vocabulary::new(30_000, &mut rng);
    let dim = embedder.dim();

    // Ingest throughput, embedding included: a fresh collection of real passages.
    let work = tempfile::Builder::new().prefix("engram-bench-search").tempdir()?;
    let base: Vec<String> = (0..args.embedded).map(|_| vocabulary.passage(&mut rng)).collect();
    let base_vectors = {
        let dir = work.path().join("throughput");
        let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default())?;
        let rag = Rag::open(store, &dir.join("index"), embedder.clone(), RagOptions::default())?;
        let docs: Vec<NewDocument> = base
            .iter()
            .enumerate()
            .map(|(i, t)| NewDocument::from_text(format!("base-{i}"), t.clone(), Format::Text))
            .collect();
        let report =
            rag.ingest_documents(&Target::collection("bench")?, docs, Unlisted::Keep, &mut engram_rag::no_progress)?;
        println!(
            "ingest, embedding included: {} chunks in {:.1}s = {:.1} chunks/s ({} embedded)",
            report.chunks_written,
            report.seconds,
            report.chunks_written as f64 / report.seconds,
            report.embedded
        );
        embedder.embed(&base)?
    };

    println!("\n{:>8} {:>10} {:>9} {:>8} {:>8} {:>8}", "chunks", "mode", "queries", "p50 ms", "p95 ms", "p99 ms");
    for &size in &args.sizes {
        let dir = work.path().join(format!("size-{size}"));
        let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default())?;
        let options = RagOptions { defer_indexing: true, ..RagOptions::default() };
        let rag = Rag::open(store, &dir.join("index"), embedder.clone(), options)?;
        let started = Instant::now();
        let mut written = 0;
        while written < size {
            let batch = (size - written).min(5000);
            let mut docs = Vec::with_capacity(batch);
            let mut vectors = Vec::with_capacity(batch);
            for i in written..written + batch {
                let (a, b) = (rng.random_range(0..base.len()), rng.random_range(0..base.len()));
                let text = one_chunk(&format!("{} {}", vocabulary.passage(&mut rng), base[a]), &embedder);
                let mut vector: Vec<f32> = base_vectors[a]
                    .iter()
                    .zip(&base_vectors[b])
                    .map(|(x, y)| 0.7 * x + 0.3 * y + 0.05 * (rng.random::<f32>() - 0.5))
                    .collect();
                let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::EPSILON);
                vector.iter_mut().for_each(|v| *v /= norm);
                vectors.push((chunk_hash(&[], &text), vector));
                docs.push(NewDocument::from_text(format!("doc-{i}"), text, Format::Text));
            }
            rag.put_embeddings(&vectors)?;
            rag.ingest_documents(&Target::collection("bench")?, docs, Unlisted::Keep, &mut engram_rag::no_progress)?;
            written += batch;
        }
        let journaled = started.elapsed();
        let indexing = Instant::now();
        rag.catch_up()?;
        let indexed = indexing.elapsed();
        let stats = rag.stats()?;
        anyhow::ensure!(
            dim == embedder.dim() && stats.vector_chunks == stats.chunks,
            "the indexes disagree: {stats:?}"
        );
        println!(
            "{:>8} built: journal {:.1}s ({:.0} chunks/s without embedding), indexes {:.1}s ({:.0} chunks/s)",
            stats.chunks,
            journaled.as_secs_f64(),
            stats.chunks as f64 / journaled.as_secs_f64(),
            indexed.as_secs_f64(),
            stats.chunks as f64 / indexed.as_secs_f64()
        );
        let queries: Vec<String> = (0..args.queries)
            .map(|_| {
                let words = rng.random_range(3..8);
                (0..words).map(|_| vocabulary.draw(&mut rng).to_owned()).collect::<Vec<_>>().join(" ")
            })
            .collect();
        let filter = Filter::collection("bench")?;
        for mode in [Mode::Hybrid, Mode::Bm25, Mode::Dense] {
            // Warm caches and the query path first.
            for query in queries.iter().take(10) {
                rag.search(query, &filter, mode, args.k)?;
            }
            let mut latencies = Vec::with_capacity(queries.len());
            for query in &queries {
                let started = Instant::now();
                let hits = rag.search(query, &filter, mode, args.k)?;
                latencies.push(started.elapsed());
                anyhow::ensure!(!hits.is_empty() || mode == Mode::Bm25, "no hits for {query:?}");
            }
            let summary = Summary::of(latencies).context("no query was timed")?;
            let name = match mode {
                Mode::Hybrid => "hybrid",
                Mode::Bm25 => "bm25",
                Mode::Dense => "dense",
            };
            println!(
                "{:>8} {:>10} {:>9} {:>8} {:>8} {:>8}",
                stats.chunks,
                name,
                summary.n,
                ms(summary.p50),
                ms(summary.p95),
                ms(summary.p99)
            );
        }
    }
    println!(
        "\n(search = query embedding + BM25 and/or dense top-{} candidates + fusion + reading the chunks from the journal)",
        RagOptions::default().candidates
    );
    Ok(())
}
