//! `engram bench`: latency of a running daemon, measured from outside.

use std::time::{Duration, Instant};

use anyhow::Context;
use engram_client::Client;
use engram_config::{Loaded, Paths};
use engram_services::health::Healthz;

use self::stats::{Samples, Summary};

pub(crate) mod stats;

/// Which transport and connection reuse one series measures.
#[derive(Debug, Clone, Copy)]
enum Mode {
    UnixKeepAlive,
    UnixFresh,
    TcpKeepAlive,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::UnixKeepAlive => "unix socket, keep-alive",
            Self::UnixFresh => "unix socket, new connection",
            Self::TcpKeepAlive => "tcp + token, keep-alive",
        }
    }
}

struct Series {
    mode: Mode,
    latencies: Summary,
    wall: Duration,
}

/// `GET /healthz` `requests` times per mode against the running daemon,
/// through the project's client, after `warmup` unmeasured requests, and
/// prints p50/p90/p99/max.
pub fn healthz(loaded: &Loaded, paths: &Paths, requests: usize, warmup: usize) -> anyhow::Result<()> {
    anyhow::ensure!(requests > 0, "--requests must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let unix = Client::unix(&paths.socket);
        unix.call(&Healthz {})
            .await
            .with_context(|| format!("no healthy daemon answers on {}", paths.socket.display()))?;
        let mut series = vec![
            measure(Mode::UnixKeepAlive, &unix, requests, warmup).await?,
            measure(Mode::UnixFresh, &unix.clone().fresh_connections(), requests, warmup).await?,
        ];
        if let Some(addr) = loaded.config.server.tcp {
            let token = std::fs::read_to_string(&paths.token_file)
                .with_context(|| format!("cannot read the token from {}", paths.token_file.display()))?;
            let tcp = Client::tcp(addr, token.trim());
            series.push(measure(Mode::TcpKeepAlive, &tcp, requests, warmup).await?);
        }
        print(&series, requests);
        Ok(())
    })
}

async fn measure(mode: Mode, client: &Client, requests: usize, warmup: usize) -> anyhow::Result<Series> {
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for i in 0..warmup + requests {
        let t0 = Instant::now();
        client.call(&Healthz {}).await?;
        if i >= warmup {
            latencies.push(t0.elapsed());
        }
    }
    let latencies = Samples::new(latencies).summary().context("no request was measured")?;
    Ok(Series { mode, latencies, wall: started.elapsed() })
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn print(series: &[Series], requests: usize) {
    println!("GET /healthz, {requests} sequential requests per row (one client)");
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "mode", "p50", "p90", "p99", "max", "req/s", "p50 vs row 1"
    );
    let base = series.first().map(|s| s.latencies.p50).unwrap_or_default();
    for s in series {
        let p50 = s.latencies.p50;
        let rate = s.latencies.n as f64 / s.wall.as_secs_f64();
        println!(
            "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>11.2}x",
            s.mode.label(),
            micros(p50),
            micros(s.latencies.p90),
            micros(s.latencies.p99),
            micros(s.latencies.max),
            rate,
            p50.as_secs_f64() / base.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    }
}

/// Options of `engram bench embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// How many sentences.
    #[arg(long, default_value_t = 1000)]
    pub sentences: usize,
    /// Sentences per batch (both sides).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Threads (both sides); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Read sentences from this file (one per line) instead of generating them.
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<std::path::PathBuf>,
    /// Timed runs per side; the median counts.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Python with the peer installed [default: from scripts/bench-peers].
    #[arg(long, value_name = "PATH")]
    pub python: Option<std::path::PathBuf>,
}

/// Options of `engram bench generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateBenchArgs {
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens decoded per pass.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Timed passes per side (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Threads (both sides); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Skip the conversion-quality table.
    #[arg(long)]
    pub no_quality: bool,
    /// Measure this GGUF file instead of the configured model; it needs no
    /// tokenizer (synthetic models of real shapes work). Implies --no-quality.
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<std::path::PathBuf>,
    /// Device to run on (overrides models.device), e.g. `cuda`.
    #[arg(long)]
    pub device: Option<String>,
    /// Skip the llama.cpp peer (e.g. on a GPU machine, where scripts/gpu-check runs the peers).
    #[arg(long)]
    pub no_peer: bool,
    /// Print Engram's figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Python with the peer installed [default: from scripts/bench-peers].
    #[arg(long, value_name = "PATH")]
    pub python: Option<std::path::PathBuf>,
}

fn threads(requested: usize) -> usize {
    if requested == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { requested }
}

/// A script compiled into the binary, so that an installed `engram` benches
/// without a source checkout: written to the bench's scratch directory
/// when it runs.
#[derive(Debug, Clone, Copy)]
struct Script {
    /// File name in the scratch directory.
    name: &'static str,
    text: &'static str,
}

/// `scripts/bench-peers`: installs the peers into a private virtualenv.
const BENCH_PEERS: Script = Script { name: "bench-peers", text: include_str!("../../../scripts/bench-peers") };
/// `scripts/bench/embed_peer.py`: sentence-transformers.
const EMBED_PEER: Script = Script { name: "embed_peer.py", text: include_str!("../../../scripts/bench/embed_peer.py") };
/// `scripts/bench/generate_peer.py`: llama.cpp.
const GENERATE_PEER: Script =
    Script { name: "generate_peer.py", text: include_str!("../../../scripts/bench/generate_peer.py") };

impl Script {
    /// Writes the script into `dir`; its path.
    fn unpack(self, dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(self.name);
        std::fs::write(&path, self.text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// A scratch directory for one bench, removed when dropped.
fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("engram-bench-").tempdir().context("cannot create a scratch directory")
}

/// The peer's python: given, or set up by (the embedded copy of)
/// `scripts/bench-peers WHICH`, run from `work`.
fn peer_python(
    given: Option<&std::path::Path>,
    which: &str,
    work: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    eprintln!("setting up the {which} peer (scripts/bench-peers {which}; the first time takes minutes)...");
    let script = BENCH_PEERS.unpack(work)?;
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(which)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run bash for scripts/bench-peers")?;
    anyhow::ensure!(output.status.success(), "scripts/bench-peers {which} failed");
    Ok(std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

/// Deterministic English-like sentences of 4 to 40 words.
fn synthetic_sentences(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "remembers",
        "a",
        "conversation",
        "about",
        "retrieval",
        "and",
        "memory",
        "while",
        "users",
        "ask",
        "questions",
        "on",
        "protein",
        "folding",
        "climate",
        "data",
        "wireless",
        "channels",
        "with",
        "small",
        "language",
        "models",
        "running",
        "locally",
        "evidence",
        "from",
        "documents",
        "is",
        "calibrated",
        "so",
        "coverage",
        "holds",
        "every",
        "answer",
        "cites",
        "its",
        "sources",
        "quickly",
        "tomorrow",
        "in",
        "Paris",
        "experiments",
        "show",
        "that",
        "insights",
        "improve",
        "over",
        "time",
        "without",
        "retraining",
    ];
    use rand::Rng;
    let mut rng = stats::rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            let len = rng.random_range(4..=40);
            let mut words: Vec<&str> = (0..len).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
            if let Some(first) = words.first_mut()
                && *first == "the"
            {
                *first = "The";
            }
            format!("{}.", words.join(" "))
        })
        .collect()
}

/// `engram bench embed`: Engram vs sentence-transformers on the same sentences.
pub fn embed(loaded: &Loaded, paths: &Paths, args: &EmbedArgs) -> anyhow::Result<()> {
    let threads = threads(args.threads);
    let sentences = match &args.corpus {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(args.sentences)
            .map(str::to_owned)
            .collect(),
        None => synthetic_sentences(args.sentences),
    };
    let dir = crate::models::resolve(&loaded.config.models.embedder.source, paths)?;
    let device = engram_models::open_device(&loaded.config.models.device)?;
    let pool = engram_models::inference_pool(threads, "bench-embed")?;
    let embedder = engram_models::Embedder::load(&dir, &device, pool, args.batch)?;
    embedder.embed(&sentences[..sentences.len().min(args.batch * 2)])?;
    let mut ours = Vec::new();
    let mut times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        ours = embedder.embed(&sentences)?;
        times.push(started.elapsed());
    }
    let our_seconds = stats::median(times).context("no timed run")?.as_secs_f64();

    let work = scratch_dir()?;
    let python = peer_python(args.python.as_deref(), "embed", work.path())?;
    let input = work.path().join("sentences.txt");
    let output = work.path().join("vectors.json");
    std::fs::write(&input, sentences.join("\n")).with_context(|| format!("cannot write {}", input.display()))?;
    let status = std::process::Command::new(&python)
        .arg(EMBED_PEER.unpack(work.path())?)
        .args(["--model", &dir.display().to_string(), "--batch", &args.batch.to_string()])
        .args(["--threads", &threads.to_string(), "--sentences", &input.display().to_string()])
        .args(["--out", &output.display().to_string(), "--runs", &args.runs.max(1).to_string()])
        .status()
        .context("cannot run the sentence-transformers peer")?;
    anyhow::ensure!(status.success(), "the sentence-transformers peer failed");
    let peer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&output).with_context(|| format!("the peer wrote no {}", output.display()))?,
    )
    .context("the sentence-transformers peer wrote no JSON")?;
    let peer_times: Vec<f64> = serde_json::from_value(peer["times"].clone()).context("the peer reported no times")?;
    let peer_times = peer_times.into_iter().map(stats::seconds).collect::<anyhow::Result<Vec<_>>>()?;
    let peer_seconds = stats::median(peer_times).context("the peer reported no times")?.as_secs_f64();
    let peer_vectors: Vec<Vec<f32>> =
        serde_json::from_value(peer["vectors"].clone()).context("the peer reported no vectors")?;
    drop(work);

    let cosines: Vec<f64> = ours.iter().zip(&peer_vectors).map(|(a, b)| cosine(a, b)).collect();
    let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
    let n = sentences.len() as f64;
    println!(
        "embeddings: {} sentences, batch {}, {} threads, median of {} runs, model {}",
        sentences.len(),
        args.batch,
        threads,
        args.runs.max(1),
        dir.display()
    );
    println!("{:<44} {:>10} {:>14} {:>8}", "engine", "seconds", "sentences/s", "ratio");
    println!(
        "{:<44} {:>10.3} {:>14.1} {:>7.2}x",
        if device.is_cpu() { "engram (fused CPU kernels)" } else { "engram (candle)" },
        our_seconds,
        n / our_seconds,
        peer_seconds / our_seconds
    );
    let torch = peer["torch"].as_str().unwrap_or("?");
    println!(
        "{:<44} {:>10.3} {:>14.1} {:>7.2}x",
        format!("sentence-transformers (torch {torch})"),
        peer_seconds,
        n / peer_seconds,
        1.0
    );
    println!("agreement: cosine min {min:.6}, mean {mean:.6} (bar: >= 0.999)");
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

const BENCH_TEXT: &str = "Memory lets a language model keep track of what was said many turns ago. \
A compact summary holds the gist of the conversation, while verbatim episodes keep the exact words \
that matter. When a question arrives, the assistant retrieves the episodes most related to it, adds \
the summary, and answers within a fixed token budget. Retrieval over documents works the same way: \
hybrid search finds candidate passages, and a calibrated threshold decides how many to include so that \
the evidence is present with a stated probability. Over time, the assistant also learns explicit \
insights from its failures, which it can apply to new tasks without any retraining of the model.";

/// One warm-up pass of 8 tokens, then `args.runs` timed passes: the median
/// (prefill, decode) seconds.
fn timed_passes(
    args: &GenerateBenchArgs,
    mut pass: impl FnMut(usize) -> Result<(Duration, Duration), engram_models::ModelError>,
) -> anyhow::Result<(f64, f64)> {
    pass(8)?;
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..args.runs.max(1) {
        let (p, d) = pass(args.decode_tokens)?;
        prefill.push(p);
        decode.push(d);
    }
    medians(prefill, decode)
}

/// The median seconds of each series.
fn medians(prefill: Vec<Duration>, decode: Vec<Duration>) -> anyhow::Result<(f64, f64)> {
    let prefill = stats::median(prefill).context("no timed pass")?;
    let decode = stats::median(decode).context("no timed pass")?;
    Ok((prefill.as_secs_f64(), decode.as_secs_f64()))
}

/// `engram bench generate --gguf FILE`: Engram's speed alone on any GGUF.
fn generate_file(file: &std::path::Path, device: &str, args: &GenerateBenchArgs) -> anyhow::Result<()> {
    let threads = threads(args.threads);
    let device = engram_models::open_device(device)?;
    let pool = engram_models::inference_pool(threads, "bench-llm")?;
    let loading = Instant::now();
    let mut model = pool.install(|| engram_models::BenchModel::load(file, &device))?;
    let load_s = loading.elapsed().as_secs_f64();
    // Token ids spread over the vocabulary; speed does not depend on values.
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32).map(|i| (i * 7919 + 13) % model.vocab as u32).collect();
    let (p, d) = pool.install(|| timed_passes(args, |decode| model.pass(&prompt, decode)))?;
    let prefill_tps = args.prompt_tokens as f64 / p;
    let decode_tps = args.decode_tokens as f64 / d;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "device": format!("{device:?}"),
                "weight_bytes": model.weight_bytes,
                "load_seconds": load_s,
                "prompt_tokens": args.prompt_tokens,
                "decode_tokens": args.decode_tokens,
                "prefill_tok_s": prefill_tps,
                "decode_tok_s": decode_tps,
            })
        );
    } else {
        println!("{}: {:.2} GB of weights, loaded in {load_s:.1} s", file.display(), model.weight_bytes as f64 / 1e9);
        println!(
            "prefill {prefill_tps:.1} tok/s ({} tokens), decode {decode_tps:.1} tok/s ({} tokens)",
            args.prompt_tokens, args.decode_tokens
        );
    }
    Ok(())
}

/// `engram bench generate`: Engram vs llama.cpp on the same GGUF and threads.
pub fn generate(loaded: &Loaded, paths: &Paths, args: &GenerateBenchArgs) -> anyhow::Result<()> {
    let device = args.device.clone().unwrap_or_else(|| loaded.config.models.device.clone());
    if let Some(file) = &args.gguf {
        return generate_file(file, &device, args);
    }
    let threads = threads(args.threads);
    let mut config = loaded.config.clone();
    config.models.device = device;
    let config = &config;
    let source = crate::models::resolve(&config.models.llm.source, paths)?;
    let pool = engram_models::inference_pool(threads, "bench-llm")?;
    let mut model = crate::models::load_local(config, paths)?;
    let mut prompt = Vec::new();
    while prompt.len() < args.prompt_tokens {
        prompt.extend(model.tokenizer().encode(BENCH_TEXT)?);
    }
    prompt.truncate(args.prompt_tokens);

    let ours = pool.install(|| timed_passes(args, |decode| model.bench_pass(&prompt, decode)))?;
    // The candle engine on the same file, for comparison, when ours is native.
    let candle = if model.engine() == "native" {
        let mut candle = engram_models::LocalModel::load(&source, &candle_options(config, paths, CandlePath::Q8Copy)?)?;
        let times = pool.install(|| timed_passes(args, |decode| candle.bench_pass(&prompt, decode)))?;
        Some((candle.loaded.clone(), times))
    } else {
        None
    };
    if args.no_peer {
        let (p, d) = (args.prompt_tokens as f64 / ours.0, args.decode_tokens as f64 / ours.1);
        println!("{}: prefill {p:.1} tok/s, decode {d:.1} tok/s ({threads} threads)", model.loaded.display());
        return Ok(());
    }

    let work = scratch_dir()?;
    let python = peer_python(args.python.as_deref(), "generate", work.path())?;
    let tokens = work.path().join("tokens.json");
    std::fs::write(&tokens, serde_json::to_vec(&prompt)?)
        .with_context(|| format!("cannot write {}", tokens.display()))?;
    let output = std::process::Command::new(&python)
        .arg(GENERATE_PEER.unpack(work.path())?)
        .args(["--gguf", &source.display().to_string(), "--tokens", &tokens.display().to_string()])
        .args(["--decode", &args.decode_tokens.to_string(), "--threads", &threads.to_string()])
        .args(["--runs", &args.runs.max(1).to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the llama.cpp peer")?;
    drop(work);
    anyhow::ensure!(output.status.success(), "the llama.cpp peer failed");
    let peer: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the llama.cpp peer printed no JSON")?;
    let seconds = |key: &str| -> anyhow::Result<Vec<Duration>> {
        let values: Vec<f64> = serde_json::from_value(peer[key].clone())
            .with_context(|| format!("the llama.cpp peer reported no {key} times"))?;
        values.into_iter().map(stats::seconds).collect()
    };
    let theirs = medians(seconds("prefill")?, seconds("decode")?)?;

    let p = args.prompt_tokens as f64;
    let d = args.decode_tokens as f64;
    println!(
        "generation on CPU: {} ({}), prompt {} tokens, decode {} tokens, {} threads, median of {} runs",
        model.name,
        model.loaded.display(),
        args.prompt_tokens,
        args.decode_tokens,
        threads,
        args.runs.max(1)
    );
    println!("{:<32} {:>14} {:>14} {:>14}", "engine", "prefill tok/s", "decode tok/s", "decode ratio");
    let label = format!("engram ({})", model.engine());
    println!("{label:<32} {:>14.1} {:>14.1} {:>13.2}x", p / ours.0, d / ours.1, theirs.1 / ours.1);
    if let Some((file, times)) = &candle {
        let kind = if *file == source { "candle" } else { "candle, Q8_0 copy" };
        let label = format!("engram ({kind})");
        println!("{label:<32} {:>14.1} {:>14.1} {:>13.2}x", p / times.0, d / times.1, theirs.1 / times.1);
    }
    let version = peer["version"].as_str().unwrap_or("?");
    println!(
        "{:<32} {:>14.1} {:>14.1} {:>13.2}x",
        format!("llama.cpp (python {version})"),
        p / theirs.0,
        d / theirs.1,
        1.0
    );
    println!("(llama.cpp runs the original file {}; bar: decode >= 0.8x)", source.display());

    if !args.no_quality {
        quality(config, paths, &pool, &mut model, &source)?;
    }
    Ok(())
}

/// Which of candle's paths a comparison loads a model on.
#[derive(Debug, Clone, Copy)]
enum CandlePath {
    /// Every tensor type as stored (slow for Q4_1/Q5: the reference).
    Exact,
    /// Q4_1/Q5 tensors converted once to a cached Q8_0 copy.
    Q8Copy,
}

/// The configured options, on candle's `path` (never the native engine).
fn candle_options(
    config: &engram_config::Config,
    paths: &Paths,
    path: CandlePath,
) -> anyhow::Result<engram_models::LocalOptions> {
    let options = engram_services::models::local_options(config, paths)?;
    Ok(engram_models::LocalOptions {
        native_cpu: false,
        convert_slow_types: matches!(path, CandlePath::Q8Copy),
        ..options
    })
}

/// Perplexity and greedy answers of the engine in use, and of a Q8_0 copy
/// when candle needs one, against candle on the original file (its exact,
/// slow path for every tensor type).
fn quality(
    config: &engram_config::Config,
    paths: &Paths,
    pool: &rayon::ThreadPool,
    model: &mut engram_models::LocalModel,
    source: &std::path::Path,
) -> anyhow::Result<()> {
    let mut reference = engram_models::LocalModel::load(source, &candle_options(config, paths, CandlePath::Exact)?)?;
    let converted = engram_models::LocalModel::load(source, &candle_options(config, paths, CandlePath::Q8Copy)?)?;
    let mut converted = (converted.loaded != source).then_some(converted);
    let mut variants = vec![(format!("engram ({})", model.engine()), model)];
    if let Some(converted) = converted.as_mut() {
        variants.push(("candle, Q8_0 copy".to_owned(), converted));
    }
    println!("\nquality against candle on the original file ({}-character text, greedy answers):", BENCH_TEXT.len());
    let reference_ppl = pool.install(|| reference.perplexity(BENCH_TEXT))?;
    println!("perplexity: reference {reference_ppl:.3}");
    for (label, variant) in &mut variants {
        let ppl = pool.install(|| variant.perplexity(BENCH_TEXT))?;
        println!("perplexity: {label} {ppl:.3} ({:+.2}%)", (ppl / reference_ppl - 1.0) * 100.0);
    }
    let prompts =
        ["What is the capital of France?", "Name three primary colors.", "Write one sentence about the ocean."];
    for prompt in prompts {
        let request = engram_models::GenerateRequest {
            prompt: engram_models::Prompt::Chat(vec![engram_models::Message::new(engram_models::Role::User, prompt)]),
            sampling: engram_models::SamplingParams::greedy(),
            max_tokens: 32,
            stop: Vec::new(),
            json_schema: None,
        };
        println!("- {prompt}");
        let mut text = String::new();
        pool.install(|| reference.generate(&request, &mut text))?;
        println!("    {:<20} {}", "reference:", text.replace('\n', " "));
        for (label, variant) in &mut variants {
            let mut text = String::new();
            pool.install(|| variant.generate(&request, &mut text))?;
            println!("    {:<20} {}", format!("{label}:"), text.replace('\n', " "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_scripts_travel_inside_the_binary() {
        let dir = scratch_dir().unwrap();
        let path = dir.path().to_path_buf();
        for (script, marker) in
            [(BENCH_PEERS, "#!/usr/bin/env bash"), (EMBED_PEER, "sentence_transformers"), (GENERATE_PEER, "llama_cpp")]
        {
            let written = script.unpack(&path).unwrap();
            assert_eq!(written, path.join(script.name));
            assert_eq!(std::fs::read_to_string(&written).unwrap(), script.text);
            assert!(script.text.contains(marker), "{}", script.name);
        }
        drop(dir);
        assert!(!path.exists(), "the scratch directory is removed with its guard");
    }
}
