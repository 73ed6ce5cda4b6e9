//! `engram generate` and `engram embed`: the configured models, loaded
//! directly (no daemon), for scripts and checks.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use engram_config::{LlmBackend, Loaded, Paths};
use engram_models::{Event, GenerateRequest, Message, Prompt, Role, SamplingParams, TokenSink, inference_pool};

/// Options of `engram generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The user's message.
    pub prompt: String,
    /// A system message before it.
    #[arg(long)]
    pub system: Option<String>,
    /// RNG seed (same seed, same text).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Constrain the output to JSON valid against this JSON Schema file.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Treat PROMPT as raw model input, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print token counts and speed to stderr.
    #[arg(long)]
    pub stats: bool,
}

struct Stdout {
    out: std::io::Stdout,
    tty: bool,
}

impl TokenSink for Stdout {
    fn send(&mut self, text: &str) -> bool {
        let mut lock = self.out.lock();
        let ok = lock.write_all(text.as_bytes()).is_ok();
        if self.tty {
            let _ = lock.flush();
        }
        ok
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Runs `engram generate`.
pub fn generate(loaded: &Loaded, paths: &Paths, args: &GenerateArgs) -> anyhow::Result<()> {
    let schema = match &args.json_schema {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .with_context(|| format!("{} is not valid JSON", file.display()))?,
            )
        }
        None => None,
    };
    let prompt = if args.raw {
        Prompt::Raw(args.prompt.clone())
    } else {
        let mut system = args.system.clone().unwrap_or_default();
        if let Some(schema) = &schema {
            // Small models follow the shape much better when they see it.
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&format!("Answer only with a JSON value that matches this JSON Schema:\n{schema}"));
        }
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(Message::new(Role::System, system));
        }
        messages.push(Message::new(Role::User, args.prompt.clone()));
        Prompt::Chat(messages)
    };
    let request = GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            ..SamplingParams::default()
        },
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        json_schema: schema,
    };
    let config = &loaded.config;
    let mut sink = Stdout { out: std::io::stdout(), tty: std::io::stdout().is_terminal() };
    let finish = match config.models.llm.backend {
        LlmBackend::Local => {
            let mut model = crate::models::load_local(config, paths)?;
            let pool = inference_pool(config.models.threads, "engram-llm")?;
            pool.install(|| model.generate(&request, &mut sink))?
        }
        LlmBackend::Openai => {
            let remote = crate::models::remote(config, paths)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut stream = remote.generate(request).await?;
                while let Some(event) = stream.recv().await {
                    match event? {
                        Event::Text(text) => {
                            sink.send(&text);
                        }
                        Event::Done(finish) => return Ok::<_, anyhow::Error>(finish),
                    }
                }
                anyhow::bail!("the remote stream ended early")
            })?
        }
    };
    println!();
    if args.stats {
        eprintln!(
            "{} prompt tokens in {:.0} ms; {} tokens in {:.0} ms ({:.1} tok/s); finish: {:?}",
            finish.prompt_tokens,
            finish.prefill.as_secs_f64() * 1e3,
            finish.completion_tokens,
            finish.decode.as_secs_f64() * 1e3,
            finish.completion_tokens as f64 / finish.decode.as_secs_f64().max(1e-9),
            finish.reason
        );
    }
    Ok(())
}

/// Runs `engram embed`: one vector per text, as JSON or one line each.
pub fn embed(loaded: &Loaded, paths: &Paths, texts: &[String], json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(!texts.is_empty(), "give at least one TEXT to embed");
    let embedder = crate::models::load_embedder(&loaded.config, paths)?;
    let vectors = embedder.embed(texts)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!(vectors))?;
    } else {
        for vector in vectors {
            let line: Vec<String> = vector.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{}", line.join(" "))?;
        }
    }
    Ok(())
}
