//! The local generator: a GGUF model, its tokenizer and chat template, and
//! the decode loop (sampling, constrained JSON, stop sequences, UTF-8-safe
//! streaming, cancellation).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::gguf::{self, Weights};
use crate::json::JsonConstraint;
use crate::sampling::{Sampler, SamplingParams};
use std::sync::Arc;

use crate::template::{ChatTemplate, Message};
use crate::tokenizer::GgufTokenizer;

/// What to complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Raw text, passed to the model as is.
    Raw(String),
}

/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Most tokens to generate (the context may end generation sooner).
    pub max_tokens: usize,
    /// Texts that end the completion (not included in it).
    pub stop: Vec<String>,
    /// When set, the output is JSON valid against this schema.
    pub json_schema: Option<serde_json::Value>,
}

impl GenerateRequest {
    /// A chat request with default sampling and 256 tokens at most.
    pub fn chat(messages: Vec<Message>) -> Self {
        Self {
            prompt: Prompt::Chat(messages),
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            json_schema: None,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, a stop sequence appeared, or the JSON value closed.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The client went away.
    Cancelled,
}

/// The end of a generation, with its accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// Why it ended.
    pub reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Time to process the prompt.
    pub prefill: Duration,
    /// Time spent generating after the prompt.
    pub decode: Duration,
}

/// Where generated text goes.
pub trait TokenSink {
    /// Delivers a chunk of text; false when the receiver is gone.
    fn send(&mut self, text: &str) -> bool;
    /// Whether the receiver is gone (checked every decode step).
    fn is_cancelled(&self) -> bool;
}

/// A sink that collects text into a string.
impl TokenSink for String {
    fn send(&mut self, text: &str) -> bool {
        self.push_str(text);
        true
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// How to load a local model.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Where it runs.
    pub device: Device,
    /// Cap on prompt + completion tokens.
    pub context_tokens: usize,
    /// Where converted (requantized) files are cached.
    pub cache_dir: PathBuf,
    /// Convert tensor types without a fast CPU kernel (Q4_1, Q5_x) to Q8_0
    /// for candle (files the native engine runs need no conversion).
    pub convert_slow_types: bool,
    /// Run llama-architecture Q4_0/Q4_1/Q8_0 files on the native CPU engine
    /// (`cpu_llama`) rather than candle.
    pub native_cpu: bool,
}

/// A model's tokenizer and chat template: the tokens it sees for a prompt.
/// Cheap to clone.
#[derive(Clone)]
pub struct TokenCounter {
    tokenizer: Arc<GgufTokenizer>,
    template: Arc<ChatTemplate>,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter").field("vocab", &self.tokenizer.vocab_size()).finish()
    }
}

impl TokenCounter {
    /// The exact text the model sees for `prompt`.
    pub fn render(&self, prompt: &Prompt) -> Result<String, ModelError> {
        match prompt {
            Prompt::Chat(messages) => self.template.render(messages),
            Prompt::Raw(text) => Ok(text.clone()),
        }
    }

    /// The token ids the model sees for `prompt`.
    pub fn ids(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        let text = self.render(prompt)?;
        let mut ids = self.tokenizer.encode(&text)?;
        if let (true, Some(bos), Prompt::Raw(_)) = (self.tokenizer.add_bos, self.tokenizer.bos, prompt)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// How many tokens the model sees for `prompt`.
    pub fn count(&self, prompt: &Prompt) -> Result<usize, ModelError> {
        Ok(self.ids(prompt)?.len())
    }
}

/// A GGUF model ready to generate. Not `Sync`: one generation at a time
/// (the scheduler owns it).
pub struct LocalModel {
    weights: Weights,
    tokenizer: Arc<GgufTokenizer>,
    template: Arc<ChatTemplate>,
    device: Device,
    context: usize,
    /// The file given in the configuration.
    pub source: PathBuf,
    /// The file actually loaded (a converted copy when slow types were converted).
    pub loaded: PathBuf,
    /// `general.name` from the metadata, or the file name.
    pub name: String,
}

impl LocalModel {
    /// Loads the model at `path`.
    pub fn load(path: &Path, options: &LocalOptions) -> Result<Self, ModelError> {
        let native = options.native_cpu && options.device.is_cpu() && crate::cpu_llama::supports(&gguf::open(path)?.0);
        let loaded = if !native && options.convert_slow_types && options.device.is_cpu() {
            gguf::fast_variant(path, &options.cache_dir)?
        } else {
            path.to_path_buf()
        };
        let (content, mut reader) = gguf::open(&loaded)?;
        let tokenizer = GgufTokenizer::from_gguf(&content, path)?;
        let template_source = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token(id)).unwrap_or_default().to_owned();
        let template = ChatTemplate::new(
            template_source.as_deref(),
            &token_text(tokenizer.bos),
            &token_text(tokenizer.stop_tokens.first().copied()),
        )?;
        let name = content
            .metadata
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let model_context = gguf::context_length(&content).unwrap_or(options.context_tokens);
        // quantized_llama precomputes rotary tables for 4,096 positions.
        let arch_cap = if !native
            && content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).map(String::as_str)
                == Some("llama")
        {
            candle_transformers::models::quantized_llama::MAX_SEQ_LEN
        } else {
            usize::MAX
        };
        let context = options.context_tokens.min(model_context).min(arch_cap);
        let weights = Weights::load(content, &mut reader, &loaded, &options.device, native)?;
        Ok(Self {
            weights,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            device: options.device.clone(),
            context,
            source: path.to_path_buf(),
            loaded,
            name,
        })
    }

    /// Which engine runs it: `native` or `candle`.
    pub fn engine(&self) -> &'static str {
        self.weights.engine()
    }

    /// The usable context, in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// Whether the chat template came from the model (not the ChatML fallback).
    pub fn has_own_template(&self) -> bool {
        self.template.from_model
    }

    /// The exact text the model sees for `prompt`.
    pub fn render(&self, prompt: &Prompt) -> Result<String, ModelError> {
        self.counter().render(prompt)
    }

    /// Counts the tokens the model sees for a prompt; usable from any thread.
    pub fn counter(&self) -> TokenCounter {
        TokenCounter { tokenizer: self.tokenizer.clone(), template: self.template.clone() }
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        let ids = self.counter().ids(prompt)?;
        if ids.is_empty() {
            return Err(ModelError::InvalidRequest("the prompt is empty".into()));
        }
        Ok(ids)
    }

    fn logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        logits_of(&mut self.weights, &self.device, tokens, pos)
    }

    /// Generates a completion, streaming text into `sink`.
    pub fn generate(&mut self, request: &GenerateRequest, sink: &mut dyn TokenSink) -> Result<Finish, ModelError> {
        request.sampling.validate().map_err(ModelError::InvalidRequest)?;
        if request.stop.iter().any(String::is_empty) {
            return Err(ModelError::InvalidRequest("a stop sequence is empty".into()));
        }
        let constraint = request
            .json_schema
            .as_ref()
            .map(JsonConstraint::new)
            .transpose()
            .map_err(|err| ModelError::InvalidRequest(format!("json schema: {err}")))?;
        let mut json = constraint.as_ref().map(JsonConstraint::start);

        let prompt = self.prompt_ids(&request.prompt)?;
        if prompt.len() >= self.context {
            return Err(ModelError::ContextOverflow {
                prompt_tokens: prompt.len(),
                max_tokens: request.max_tokens,
                context: self.context,
            });
        }
        // `max_tokens` is an upper bound: the context may end generation first.
        let max_tokens = request.max_tokens.min(self.context - prompt.len());
        let mut sampler = Sampler::new(request.sampling.clone());
        let started = Instant::now();
        self.weights.clear();
        let mut logits = self.logits(&prompt, 0)?;
        let prefill = started.elapsed();
        let decode_started = Instant::now();

        let mut history = prompt.clone();
        let mut stream = TextStream::new(&request.stop);
        let vocab = self.tokenizer.vocab_size();
        let mut reason = FinishReason::Length;
        let mut generated = 0;
        while generated < max_tokens {
            if sink.is_cancelled() {
                reason = FinishReason::Cancelled;
                break;
            }
            let tokenizer = &self.tokenizer;
            let token = sampler.sample(&mut logits, &history, |t| {
                let t = t as usize;
                if t >= vocab {
                    return false;
                }
                match &json {
                    None => true,
                    Some(state) if tokenizer.stop_tokens.contains(&(t as u32)) => state.is_complete(),
                    Some(_) if tokenizer.is_control[t] || tokenizer.token_bytes[t].is_empty() => false,
                    Some(state) => state.clone().advance(&tokenizer.token_bytes[t]),
                }
            });
            let Some(token) = token else {
                return Err(ModelError::Inference("no token can continue the JSON value".into()));
            };
            if self.tokenizer.stop_tokens.contains(&token) {
                reason = FinishReason::Stop;
                break;
            }
            generated += 1;
            history.push(token);
            if let Some(state) = &mut json {
                state.advance(&self.tokenizer.token_bytes[token as usize]);
            }
            let (chunk, hit_stop) = stream.push(&self.tokenizer.token_bytes[token as usize]);
            if !chunk.is_empty() && !sink.send(&chunk) {
                reason = FinishReason::Cancelled;
                break;
            }
            if hit_stop || json.as_ref().is_some_and(|s| s.is_closed()) {
                reason = FinishReason::Stop;
                break;
            }
            if generated < max_tokens {
                logits = self.logits(&[token], history.len() - 1)?;
            }
        }
        if reason != FinishReason::Cancelled {
            let rest = stream.finish();
            if !rest.is_empty() && !sink.send(&rest) {
                reason = FinishReason::Cancelled;
            }
        }
        Ok(Finish {
            reason,
            prompt_tokens: prompt.len(),
            completion_tokens: generated,
            prefill,
            decode: decode_started.elapsed(),
        })
    }

    /// One timed benchmark pass: prefill `prompt`, then `decode` greedy
    /// steps (end-of-turn ignored, so every pass decodes the same count).
    /// Returns (prefill, decode) wall time.
    pub fn bench_pass(&mut self, prompt: &[u32], decode: usize) -> Result<(Duration, Duration), ModelError> {
        bench_pass(&mut self.weights, &self.device, prompt, decode)
    }

    /// Perplexity of the model on `text` (teacher-forced, token by token).
    pub fn perplexity(&mut self, text: &str) -> Result<f64, ModelError> {
        let ids = self.tokenizer.encode(text)?;
        if ids.len() < 2 {
            return Err(ModelError::InvalidRequest("perplexity needs at least two tokens".into()));
        }
        self.weights.clear();
        let mut nll = 0.0f64;
        for (pos, pair) in ids.windows(2).enumerate() {
            let logits = self.logits(&pair[..1], pos)?;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = logits.iter().map(|l| f64::from(l - max).exp()).sum::<f64>().ln() + f64::from(max);
            nll += log_sum - f64::from(logits[pair[1] as usize]);
        }
        Ok((nll / (ids.len() - 1) as f64).exp())
    }
}

fn logits_of(weights: &mut Weights, device: &Device, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
    let input = Tensor::new(tokens, device)?.unsqueeze(0)?;
    let logits = weights.forward(&input, pos)?;
    Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

fn bench_pass(
    weights: &mut Weights,
    device: &Device,
    prompt: &[u32],
    decode: usize,
) -> Result<(Duration, Duration), ModelError> {
    weights.clear();
    let started = Instant::now();
    // Copying the logits to the host also waits for the device.
    let mut logits = logits_of(weights, device, prompt, 0)?;
    let prefill = started.elapsed();
    let started = Instant::now();
    let mut sampler = Sampler::new(SamplingParams::greedy());
    for step in 0..decode {
        let token = sampler.sample(&mut logits, &[], |_| true).unwrap_or(0);
        logits = logits_of(weights, device, &[token], prompt.len() + step)?;
    }
    Ok((prefill, started.elapsed()))
}

/// Just the weights of a GGUF file, for speed measurements on files without
/// a usable tokenizer (synthetic models of real shapes).
pub struct BenchModel {
    weights: Weights,
    device: Device,
    /// Vocabulary size (rows of the output layer).
    pub vocab: usize,
    /// Bytes of tensor data: what one decode step must read.
    pub weight_bytes: u64,
}

impl BenchModel {
    /// Loads the weights of `path` onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let (content, mut reader) = gguf::open(path)?;
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|info| info.shape.dims()[0])
            .ok_or_else(|| ModelError::bad_file(path, "no token_embd.weight tensor"))?;
        let weight_bytes = content
            .tensor_infos
            .values()
            .map(|info| (info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64)
            .sum();
        let weights = Weights::load(content, &mut reader, path, device, true)?;
        Ok(Self { weights, device: device.clone(), vocab, weight_bytes })
    }

    /// One pass as in [`LocalModel::bench_pass`].
    pub fn pass(&mut self, prompt: &[u32], decode: usize) -> Result<(Duration, Duration), ModelError> {
        bench_pass(&mut self.weights, &self.device, prompt, decode)
    }
}

/// Turns token bytes into text chunks: whole UTF-8 characters only, and
/// never any part of a stop sequence.
struct TextStream {
    stops: Vec<String>,
    pending: Vec<u8>,
    text: String,
    sent: usize,
    stopped: bool,
}

impl TextStream {
    fn new(stops: &[String]) -> Self {
        Self { stops: stops.to_vec(), pending: Vec::new(), text: String::new(), sent: 0, stopped: false }
    }

    /// Adds a token's bytes; returns the text now safe to send and whether a
    /// stop sequence completed.
    fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    self.text.push_str(valid);
                    self.pending.clear();
                    break;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // SAFETY-free: `valid_up_to` bytes are valid UTF-8.
                    self.text.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match err.error_len() {
                        // An invalid sequence: replace it and go on.
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character: wait for its next bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        let unsent = &self.text[self.sent..];
        if let Some(cut) = self.stops.iter().filter_map(|s| unsent.find(s.as_str())).min() {
            let chunk = unsent[..cut].to_owned();
            self.sent = self.text.len();
            self.stopped = true;
            return (chunk, true);
        }
        // Hold back the longest tail that could still grow into a stop sequence.
        let hold = self
            .stops
            .iter()
            .flat_map(|stop| (1..stop.len()).rev().filter(move |&n| stop.is_char_boundary(n)).map(move |n| &stop[..n]))
            .filter(|prefix| unsent.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let end = self.sent + unsent.len() - hold;
        let chunk = self.text[self.sent..end].to_owned();
        self.sent = end;
        (chunk, false)
    }

    /// Whatever is left once generation ends.
    fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        if !self.pending.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
        let rest = self.text[self.sent..].to_owned();
        self.sent = self.text.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let mut stream = TextStream::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = Vec::new();
        for piece in pieces {
            let (chunk, stop) = stream.push(piece);
            out.push(chunk);
            if stop {
                return (out, true);
            }
        }
        out.push(stream.finish());
        (out, false)
    }

    #[test]
    fn multibyte_characters_split_across_tokens_come_out_whole() {
        let euro = "€".as_bytes();
        let (chunks, _) = run(&[], &[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(chunks, vec!["a", "", "", "€", "b", ""]);
    }

    #[test]
    fn stop_sequences_are_cut_and_never_leak_even_across_tokens() {
        let (chunks, stopped) = run(&["\nUser:"], &[b"Hi", b" there\nUs", b"er:", b" more"]);
        assert!(stopped);
        assert_eq!(chunks.concat(), "Hi there");
        let (chunks, stopped) = run(&["END"], &[b"EN", b"D"]);
        assert!(stopped);
        assert_eq!(chunks.concat(), "");
        let (chunks, stopped) = run(&["END"], &[b"EN", b"d"]);
        assert!(!stopped);
        assert_eq!(chunks.concat(), "ENd");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (chunks, _) = run(&[], &[&[0xFF], b"ok"]);
        assert_eq!(chunks.concat(), "\u{FFFD}ok");
    }
}
