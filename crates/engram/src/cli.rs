//! Command-line options and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use engram_config::{ConfigError, HostEnv, Loaded, Loader, Origin, Paths};

/// Engram: an LLM daemon that remembers, retrieves and improves.
#[derive(Debug, Parser)]
#[command(name = "engram", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file layered over the built-in defaults
    /// [default: $XDG_CONFIG_HOME/engram/config.toml, when it exists].
    #[arg(long, global = true, env = "ENGRAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// More log detail: -v debug, -vv trace (overrides log.level).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `engram eval` targets.
#[derive(Debug, Subcommand)]
pub enum EvalTarget {
    /// Ranking quality and conformal coverage on a BEIR data set.
    Retrieval(crate::rag::EvalRetrievalArgs),
    /// Evidence recall of conversation memory on LoCoMo.
    Memory(crate::memory::EvalMemoryArgs),
    /// pass@1 with no insights, learned insights and random ones, on a
    /// task set verified by the `lp` plugin.
    Experience(crate::insights::EvalExperienceArgs),
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGINT or SIGTERM.
    Serve,
    /// Check the environment and print a pass/fail table with fixes.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate a completion with the configured model (no daemon needed).
    Generate(crate::generate::GenerateArgs),
    /// Print the embedding of each TEXT (no daemon needed).
    Embed {
        /// Texts to embed.
        texts: Vec<String>,
        /// Print one JSON array of vectors.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration and where each section came from.
    Config,
    /// Print the resolved paths (data dir, journal, socket, models, ...).
    Paths {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ingest files and folders into a collection (incremental: changed
    /// files are re-chunked, unchanged ones skipped, vanished ones deleted).
    Ingest(crate::rag::IngestArgs),
    /// Hybrid search over ingested collections (or, with --alpha, the
    /// certified evidence set).
    Search(crate::rag::SearchArgs),
    /// Rebuild the BM25 and vector indexes from the journal.
    Reindex,
    /// List collections with their sizes.
    Collections {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Calibrate a collection's conformal threshold and store a certificate.
    Calibrate(crate::rag::CalibrateArgs),
    /// List or export conformal certificates.
    Certificates {
        #[command(subcommand)]
        command: crate::rag::CertificatesCommand,
    },
    /// Evaluate Engram on benchmark data.
    Eval {
        #[command(subcommand)]
        target: EvalTarget,
    },
    /// List and call the running daemon's plugin tools.
    Plugins {
        #[command(subcommand)]
        command: crate::plugins::PluginsCommand,
    },
    /// Conversations' memory: append turns, recall them.
    Memory {
        #[command(subcommand)]
        command: crate::memory::MemoryCommand,
    },
    /// The experience library: list, show, retire, export and import insights.
    Insights {
        #[command(subcommand)]
        command: crate::insights::InsightsCommand,
    },
    /// Bridge an MCP client on stdio (an IDE) to the daemon's `/mcp`,
    /// starting the daemon in the background when none runs.
    McpStdio(crate::mcp_stdio::McpStdioArgs),
    /// Tenants' bearer tokens for the TCP listener (no daemon needed).
    Tenant {
        #[command(subcommand)]
        command: crate::tenant::TenantCommand,
    },
    /// Measure Engram against its peers (and a running daemon's latency).
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Print version and build information.
    Version {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `engram bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// `GET /healthz` latency over the socket (keep-alive and fresh
    /// connections) and over TCP when `server.tcp` is set.
    Healthz {
        /// Measured requests per series.
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        /// Unmeasured requests first.
        #[arg(long, default_value_t = 500)]
        warmup: usize,
    },
    /// Embedding throughput and agreement vs sentence-transformers (PyTorch, CPU).
    Embed(crate::bench::EmbedArgs),
    /// CPU prefill/decode speed vs llama.cpp on the same GGUF, and the
    /// quality cost of converting slow tensor types.
    Generate(crate::bench::GenerateBenchArgs),
    /// The plugin host's call overheads, budgets and hostile suite.
    Plugins(crate::bench_plugins::PluginsBenchArgs),
    /// MCP `tools/call` round trips of a no-op plugin tool over HTTP and
    /// stdio vs the plain HTTP route, and a soak of concurrent sessions.
    Mcp(crate::bench_mcp::McpBenchArgs),
    /// Hybrid search latency at 10k and 100k chunks, and ingest throughput.
    Search(crate::bench_search::SearchBenchArgs),
    /// Memory: append acknowledgement during an ingest vs idle, recall at
    /// 100k turns, and recall after forgetting to half capacity vs before.
    Memory(crate::bench_memory::MemoryBenchArgs),
    /// Insight lookup at 1,000 insights vs embedding the task alone.
    Experience(crate::bench_experience::ExperienceBenchArgs),
}

/// Exit status for a configuration error, as for a usage error.
const EXIT_CONFIG: u8 = 2;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Version { json } = cli.command {
        print_version(json);
        return Ok(ExitCode::SUCCESS);
    }
    let env = HostEnv::from_process();
    let loaded = match load_config(&cli, &env) {
        Ok(loaded) => loaded,
        Err(err) if matches!(cli.command, Command::Doctor { .. }) => {
            return Ok(crate::doctor::run_without_config(&cli, &env, &err));
        }
        Err(err) => {
            eprintln!("error: invalid configuration:\n{err}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let threads = match &cli.command {
        Command::Bench { target: BenchTarget::Embed(args) } if args.threads > 0 => args.threads,
        Command::Bench { target: BenchTarget::Generate(args) } if args.threads > 0 => args.threads,
        _ => loaded.config.models.threads,
    };
    // So `models.threads` bounds candle's own pool too; no other thread
    // exists yet (config loading is single-threaded; runtimes start below).
    if !engram_models::limit_candle_threads(threads) && threads > 0 && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        eprintln!(
            "engram: models.threads cannot bound candle's own pool here; set CANDLE_NUM_THREADS={threads} to do so"
        );
    }
    match cli.command {
        Command::Serve => {
            let paths = resolve_paths(&loaded, &env)?;
            crate::logging::init(&loaded)?;
            crate::serve::run(&loaded, &paths)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => {
            let paths = resolve_paths(&loaded, &env)?;
            Ok(crate::doctor::run(&loaded, &paths, json))
        }
        Command::Config => {
            print_config(&loaded)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Paths { json } => {
            print_paths(&resolve_paths(&loaded, &env)?, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => {
            crate::generate::generate(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed { texts, json } => {
            crate::generate::embed(&loaded, &resolve_paths(&loaded, &env)?, &texts, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Embed(args) } => {
            crate::bench::embed(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Generate(args) } => {
            crate::bench::generate(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Search(args) } => {
            crate::bench_search::search(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Memory(args) } => {
            crate::bench_memory::memory(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Experience(args) } => {
            crate::bench_experience::experience(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Plugins(args) } => {
            crate::bench_plugins::plugins(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Mcp(args) } => {
            crate::bench_mcp::mcp(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { target: BenchTarget::Healthz { requests, warmup } } => {
            crate::bench::healthz(&loaded, &resolve_paths(&loaded, &env)?, requests, warmup)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(args) => {
            crate::rag::ingest(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search(args) => {
            crate::rag::search(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex => {
            crate::rag::reindex(&loaded, &resolve_paths(&loaded, &env)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Collections { json } => {
            crate::rag::collections(&loaded, &resolve_paths(&loaded, &env)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate(args) => {
            crate::rag::calibrate(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certificates { command } => {
            crate::rag::certificates(&loaded, &resolve_paths(&loaded, &env)?, &command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { target: EvalTarget::Retrieval(args) } => {
            crate::rag::eval_retrieval(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { target: EvalTarget::Memory(args) } => {
            crate::memory::eval(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval { target: EvalTarget::Experience(args) } => {
            crate::insights::eval(&loaded, &resolve_paths(&loaded, &env)?, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Memory { command } => {
            crate::memory::run(&loaded, &resolve_paths(&loaded, &env)?, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Insights { command } => {
            crate::insights::run(&loaded, &resolve_paths(&loaded, &env)?, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::McpStdio(args) => {
            let paths = resolve_paths(&loaded, &env)?;
            let launch = (!args.no_start)
                .then(|| -> anyhow::Result<_> {
                    let mut global_args = Vec::new();
                    if let Some(config) = &cli.config {
                        global_args.extend(["--config".into(), config.clone().into_os_string()]);
                    }
                    if let Some(dir) = &cli.data_dir {
                        global_args.extend(["--data-dir".into(), dir.clone().into_os_string()]);
                    }
                    Ok(crate::mcp_stdio::Launch {
                        exe: std::env::current_exe().context("cannot find this executable to start the daemon")?,
                        global_args,
                        log: paths.data_dir.join("engram-serve.log"),
                    })
                })
                .transpose()?;
            let max = usize::try_from(loaded.config.server.max_body_bytes).unwrap_or(usize::MAX);
            crate::mcp_stdio::run(paths.socket.clone(), launch, max)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant { command } => {
            crate::tenant::run(&resolve_paths(&loaded, &env)?, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Plugins { command } => crate::plugins::run(&loaded, &resolve_paths(&loaded, &env)?, command),
        Command::Version { .. } => unreachable!("handled above"),
    }
}

/// Loads the configuration layers in order: defaults, file, environment, flags.
pub fn load_config(cli: &Cli, env: &HostEnv) -> Result<Loaded, ConfigError> {
    let mut loader = match &cli.config {
        Some(file) => Loader::new().file(file, true),
        None => match engram_config::default_user_file(env.xdg_config_home.as_deref(), env.home.as_deref()) {
            Some(file) => Loader::new().file(file, false),
            None => Loader::new(),
        },
    };
    loader = loader.env_vars(
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?))),
    );
    if let Some(dir) = &cli.data_dir {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        loader = loader.set("storage.data_dir", dir.display().to_string(), Origin::Cli("--data-dir"));
    }
    match cli.verbose {
        0 => {}
        1 => loader = loader.set("log.level", "debug", Origin::Cli("-v")),
        _ => loader = loader.set("log.level", "trace", Origin::Cli("-vv")),
    }
    if let Some(format) = cli.log_format {
        let name = match format {
            LogFormatArg::Human => "human",
            LogFormatArg::Json => "json",
        };
        loader = loader.set("log.format", name, Origin::Cli("--log-format"));
    }
    loader.load()
}

fn resolve_paths(loaded: &Loaded, env: &HostEnv) -> anyhow::Result<Paths> {
    Paths::resolve(&loaded.config, env).context("cannot work out where Engram keeps its data")
}

fn print_version(json: bool) {
    let version = env!("CARGO_PKG_VERSION");
    let sqlite = engram_store::rusqlite::version();
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    if json {
        let value = serde_json::json!({
            "version": version,
            "journal_schema": engram_store::SCHEMA_VERSION,
            "sqlite": sqlite,
            "target": target,
            "profile": profile,
        });
        println!("{value}");
    } else {
        println!("engram {version}");
        println!("journal schema {}, SQLite {sqlite}, {target}, {profile} build", engram_store::SCHEMA_VERSION);
    }
}

fn print_config(loaded: &Loaded) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(&loaded.config).context("cannot render the configuration")?;
    println!("# Effective configuration. Layers, lowest first:");
    for source in &loaded.sources {
        println!("#   {source}");
    }
    println!("\n{text}");
    Ok(())
}

fn print_paths(paths: &Paths, json: bool) {
    let rows = [
        ("data_dir", &paths.data_dir),
        ("journal", &paths.journal),
        ("lock_file", &paths.lock_file),
        ("socket", &paths.socket),
        ("token_file", &paths.token_file),
        ("tenant_tokens_dir", &paths.tenant_tokens_dir),
        ("models_dir", &paths.models_dir),
        ("plugins_dir", &paths.plugins_dir),
        ("grants_file", &paths.grants_file),
        ("cache_dir", &paths.cache_dir),
        ("embedder", &paths.embedder),
        ("llm", &paths.llm),
    ];
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|(name, path)| ((*name).to_owned(), path.display().to_string().into())).collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        for (name, path) in rows {
            println!("{name:<17}  {}", path.display());
        }
    }
}
