//! One model instance, one worker thread, a bounded FIFO queue.
//!
//! Generation runs on a dedicated thread inside the model's own rayon pool,
//! never on the async executor. Requests queue in arrival order behind the
//! running one; when `queue_depth` are already waiting a new request is
//! refused at once with [`ModelError::Busy`] instead of hanging. Every
//! decode step checks whether the receiver is still there, so a client that
//! goes away stops its generation within one step.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tokio::sync::mpsc;

use crate::ModelError;
use crate::llm::{Finish, GenerateRequest, LocalModel, TokenSink};

/// A piece of a streamed generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text.
    Text(String),
    /// The end, with accounting.
    Done(Finish),
}

/// The receiving end of one generation: text chunks, then `Done` (or an error).
pub type EventStream = mpsc::Receiver<Result<Event, ModelError>>;

/// Counters of the worker, for metrics and tests.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Generations that ran to a natural end (stop or length).
    pub completed: AtomicU64,
    /// Generations stopped because the client went away.
    pub cancelled: AtomicU64,
    /// Generations that failed.
    pub failed: AtomicU64,
    /// Tokens generated, all requests together.
    pub tokens: AtomicU64,
}

/// Facts about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// Usable context, in tokens.
    pub context: usize,
    /// The file loaded.
    pub path: std::path::PathBuf,
}

struct Job {
    request: GenerateRequest,
    events: mpsc::Sender<Result<Event, ModelError>>,
}

/// A handle to the model worker. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<SchedulerStats>,
    info: Arc<ModelInfo>,
}

impl Scheduler {
    /// Starts the worker thread that owns `model` and runs it on `pool`.
    pub fn start(model: LocalModel, pool: rayon::ThreadPool, queue_depth: usize) -> Result<Self, ModelError> {
        let (jobs, inbox) = sync_channel(queue_depth);
        let waiting = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(SchedulerStats::default());
        let info =
            Arc::new(ModelInfo { name: model.name.clone(), context: model.context(), path: model.loaded.clone() });
        let (w, s) = (waiting.clone(), stats.clone());
        std::thread::Builder::new()
            .name("engram-llm".into())
            .spawn(move || pool.install(move || work(model, inbox, &w, &s)))
            .map_err(|err| ModelError::Inference(format!("cannot start the model worker: {err}")))?;
        Ok(Self { jobs, waiting, stats, info })
    }

    /// Queues `request`; its text streams from the returned receiver.
    /// Dropping the receiver cancels the generation.
    pub fn submit(&self, request: GenerateRequest) -> Result<EventStream, ModelError> {
        let (events, stream) = mpsc::channel(64);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(Job { request, events }) {
            Ok(()) => Ok(stream),
            Err(TrySendError::Full(_)) => {
                let waiting = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
                Err(ModelError::Busy { waiting })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(ModelError::WorkerGone)
            }
        }
    }

    /// Requests accepted but not yet running.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The worker's counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
}

struct ChannelSink<'a> {
    events: &'a mpsc::Sender<Result<Event, ModelError>>,
}

impl TokenSink for ChannelSink<'_> {
    fn send(&mut self, text: &str) -> bool {
        self.events.blocking_send(Ok(Event::Text(text.to_owned()))).is_ok()
    }

    fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

fn work(mut model: LocalModel, inbox: Receiver<Job>, waiting: &AtomicUsize, stats: &SchedulerStats) {
    for job in inbox {
        waiting.fetch_sub(1, Ordering::SeqCst);
        if job.events.is_closed() {
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut sink = ChannelSink { events: &job.events };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.generate(&job.request, &mut sink)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Err(ModelError::Inference(format!("the model panicked: {what}")))
            });
        match outcome {
            Ok(finish) => {
                stats.tokens.fetch_add(finish.completion_tokens as u64, Ordering::Relaxed);
                let counter = match finish.reason {
                    crate::FinishReason::Cancelled => &stats.cancelled,
                    _ => &stats.completed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.blocking_send(Ok(Event::Done(finish)));
            }
            Err(err) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.blocking_send(Err(err));
            }
        }
    }
}
