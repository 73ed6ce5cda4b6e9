//! Engram's models: a BERT-family embedder and a GGUF generator run
//! in-process with candle (CPU, or CUDA with the `cuda` feature), and the
//! same generator interface over any OpenAI-compatible server.
//!
//! - [`Embedder`]: sentence vectors (mean pooling, L2 norm), batched.
//! - [`LocalModel`]: a GGUF model with its own tokenizer and chat template;
//!   sampling, stop sequences, UTF-8-safe streaming, constrained JSON.
//! - [`Scheduler`]: one model, one worker thread, a bounded FIFO queue;
//!   dropping a request's receiver cancels it within one decode step.
//! - [`Llm`]: local or remote, behind one `generate` call.

mod bert;
mod cpu_llama;
mod device;
mod embed;
mod error;
mod gguf;
mod json;
mod kernels;
mod llm;
mod quant;
mod remote;
mod sampling;
mod scheduler;
mod source;
mod template;
mod tokenizer;

pub use device::{inference_pool, limit_candle_threads, open_device};
pub use embed::{Embedder, Pooling};
pub use error::ModelError;
pub use gguf::{fast_variant, open as open_gguf};
pub use json::{JsonConstraint, JsonState};
pub use llm::{
    BenchModel, Finish, FinishReason, GenerateRequest, LocalModel, LocalOptions, Prompt, TokenCounter, TokenSink,
};
pub use remote::{RemoteLlm, RemoteOptions};
pub use sampling::{Sampler, SamplingParams};
pub use scheduler::{Event, EventStream, ModelInfo, Scheduler, SchedulerStats};
pub use source::fetch_from_hub;
pub use template::{CHATML, ChatTemplate, Message, Role};
pub use tokenizer::GgufTokenizer;

pub use candle_core::Device;

/// A generator, local or remote, behind one call. Cheap to clone.
#[derive(Clone)]
pub enum Llm {
    /// The in-process model and its queue.
    Local(Scheduler),
    /// An OpenAI-compatible server.
    Remote(std::sync::Arc<RemoteLlm>),
}

impl Llm {
    /// Starts `request`; text streams from the returned receiver, and
    /// dropping it cancels the generation.
    pub async fn generate(&self, request: GenerateRequest) -> Result<EventStream, ModelError> {
        match self {
            Self::Local(scheduler) => scheduler.submit(request),
            Self::Remote(remote) => remote.generate(request).await,
        }
    }

    /// The model's name as the API reports it.
    pub fn name(&self) -> String {
        match self {
            Self::Local(scheduler) => scheduler.info().name.clone(),
            Self::Remote(remote) => remote.model().to_owned(),
        }
    }

    /// Runs `request` to the end and returns its text and accounting.
    pub async fn complete(&self, request: GenerateRequest) -> Result<(String, Finish), ModelError> {
        let mut stream = self.generate(request).await?;
        let mut text = String::new();
        while let Some(event) = stream.recv().await {
            match event? {
                Event::Text(chunk) => text.push_str(&chunk),
                Event::Done(finish) => return Ok((text, finish)),
            }
        }
        Err(ModelError::WorkerGone)
    }
}
