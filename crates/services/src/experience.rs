//! The experience library's operations ([`engram_experience::ops`]),
//! answered on the blocking pool (the journal is SQLite), and what the
//! library needs from the rest of Engram: the model as its
//! [`Generator`], a plugin as its [`Verifier`].

use std::sync::Arc;

use engram_config::Paths;
use engram_experience::evolve::{Evolution, EvolveOptions};
use engram_experience::files::{self, ImportReport};
use engram_experience::learn::{LearnOptions, Learner};
use engram_experience::ops::{
    EditInsight, EvolveInsights, ImportInsights, InsightFeedback, InsightHistory, InsightList, InsightLookup,
    ListInsights, LookupInsights, RevertInsight, SetInsightStatus, ShowInsight,
};
use engram_experience::record::Outcome;
use engram_experience::retrieve::Retriever;
use engram_experience::task::{Ask, BoxFuture, Generator, LookupOptions, Task, Verdict, Verifier};
use engram_experience::{Experience, Insight};
use engram_index::{Embed, EmbedFn};
use engram_models::{Embedder, Llm};
use engram_ops::{Error, Operation};
use engram_plugin_host::PluginHost;
use engram_store::Store;
use serde_json::{Value, json};

use crate::lazy::Lazy;
use crate::models::Models;

/// The experience library of one journal.
pub struct ExperienceService {
    experience: Experience,
    retriever: Lazy<Arc<Retriever>, Arc<Embedder>>,
    models: Arc<Models>,
    config: engram_config::Experience,
}

/// Where the insights' indexes live: `<data dir>/index/insights`.
pub fn index_dir(paths: &Paths) -> std::path::PathBuf {
    crate::rag::index_dir(paths).join("insights")
}

/// Opens the insights' indexes under `dir` with `embedder`, their vectors
/// where retrieval's live (`retrieval.vector_store`).
pub fn open_retriever(
    config: &engram_config::Config,
    paths: &Paths,
    store: &Store,
    dir: &std::path::Path,
    embedder: Arc<Embedder>,
) -> Result<Retriever, String> {
    let vectors = crate::rag::options(config, paths).map_err(|e| e.to_string())?.vectors;
    let embed: Arc<dyn Embed> =
        Arc::new(EmbedFn::new(embedder.name.clone(), embedder.dim(), move |texts: &[&str]| Ok(embedder.embed(texts)?)));
    Retriever::open(store.clone(), dir, embed, &vectors).map_err(|e| e.to_string())
}

impl ExperienceService {
    /// The library in `store`, its indexes under [`index_dir`].
    pub fn new(config: &engram_config::Config, paths: &Paths, store: &Store, models: Arc<Models>) -> Self {
        let (store_, dir, config_, paths_) = (store.clone(), index_dir(paths), config.clone(), paths.clone());
        let retriever = Lazy::with_input(move |embedder: Arc<Embedder>| {
            Ok(Arc::new(open_retriever(&config_, &paths_, &store_, &dir, embedder)?))
        });
        Self { experience: Experience::new(store.clone()), retriever, models, config: config.experience.clone() }
    }

    /// The library itself (for in-process work: learning, evaluation).
    pub fn library(&self) -> &Experience {
        &self.experience
    }

    /// Where opening the indexes stands.
    pub fn state(&self) -> crate::LoadState {
        self.retriever.state()
    }

    /// The insights' indexes, loading the embedder and opening them until that works.
    pub async fn retriever(&self) -> Result<Arc<Retriever>, Error> {
        let unavailable = |reason: String| Error::unavailable(format!("insight lookup is unavailable: {reason}"));
        if let Some(retriever) = self.retriever.loaded() {
            return Ok(retriever.clone());
        }
        let embedder = self.models.embedder.get().await.map_err(unavailable)?.clone();
        self.retriever.get_with(embedder).await.cloned().map_err(unavailable)
    }

    /// How lookups choose, from `[experience]`.
    pub fn lookup_options(&self) -> LookupOptions {
        lookup_options(&self.config)
    }

    /// [`LookupInsights`]: the check runs on the configured model when it
    /// is on and the model loads (otherwise lookups choose by similarity).
    pub async fn lookup(&self, request: LookupInsights) -> Result<InsightLookup, Error> {
        request.validate()?;
        let retriever = self.retriever().await?;
        let check = request.check.unwrap_or(self.config.applicability_check);
        let generator = match check {
            true => self.models.llm.get().await.ok().map(|llm| LlmGenerator(llm.clone())),
            false => None,
        };
        let generator = generator.as_ref().map(|g| g as &dyn Generator);
        Ok(engram_experience::task::lookup(&self.experience, &retriever, generator, &request, &self.lookup_options())
            .await?)
    }

    /// [`InsightFeedback`]: on a lookup of the caller's own.
    pub async fn feedback(&self, request: InsightFeedback) -> Result<Outcome, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            let tenant = request.tenant.as_ref().map(|t| t.as_str()).unwrap_or_default();
            let detail = request.diagnosis.as_deref().unwrap_or_default();
            Ok(experience.record_outcome(tenant, request.retrieval, request.passed, &request.judge, detail)?)
        })
        .await
    }

    /// [`EvolveInsights`], with the configured model.
    pub async fn evolve(&self, request: EvolveInsights) -> Result<Evolution, Error> {
        request.validate()?;
        let retriever = self.retriever().await?;
        let llm = self.models.llm.get().await.map_err(|e| Error::unavailable(format!("the generator: {e}")))?;
        let options = evolve_options(&self.config, &request);
        Ok(engram_experience::evolve::evolve(&self.experience, &retriever, &LlmGenerator(llm.clone()), &options)
            .await?)
    }

    /// [`RevertInsight`].
    pub async fn revert(&self, request: RevertInsight) -> Result<Insight, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || Ok(experience.revert(&request.editor, &request.id, request.version)?)).await
    }

    /// A learner over this library with the configured model and `verifier`.
    pub async fn learner(&self, verifier: Arc<dyn Verifier>) -> Result<Learner, Error> {
        let retriever = self.retriever().await?;
        let llm = self.models.llm.get().await.map_err(|e| Error::unavailable(format!("the generator: {e}")))?;
        Ok(Learner {
            experience: self.experience.clone(),
            retriever,
            generator: Arc::new(LlmGenerator(llm.clone())),
            verifier,
            options: learn_options(&self.config),
        })
    }

    /// [`ListInsights`].
    pub async fn list(&self, request: ListInsights) -> Result<InsightList, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            let library = experience.library()?;
            Ok(InsightList { insights: library.into_values().filter(|insight| request.admits(insight)).collect() })
        })
        .await
    }

    /// [`ShowInsight`].
    pub async fn show(&self, request: ShowInsight) -> Result<InsightHistory, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            let events = experience.events(Some(&request.id))?;
            let insight = engram_experience::fold(&events)?
                .remove(&request.id)
                .ok_or_else(|| engram_experience::ExperienceError::UnknownInsight(request.id.clone()))?;
            Ok(InsightHistory { insight, events })
        })
        .await
    }

    /// [`SetInsightStatus`].
    pub async fn set_status(&self, request: SetInsightStatus) -> Result<Insight, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || Ok(experience.set_status(&request.editor, &request.id, request.status, &request.reason)?))
            .await
    }

    /// [`EditInsight`].
    pub async fn edit(&self, request: EditInsight) -> Result<Insight, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            experience.record(&request.editor, vec![(Some(request.id.clone()), request.change())])?;
            Ok(experience.get(&request.id)?)
        })
        .await
    }

    /// [`ImportInsights`].
    pub async fn import(&self, request: ImportInsights) -> Result<ImportReport, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || Ok(files::apply(&experience, &request.files, &request.editor)?)).await
    }
}

/// How lookups choose, from `[experience]`.
pub fn lookup_options(config: &engram_config::Experience) -> LookupOptions {
    LookupOptions {
        insights: config.insights,
        candidates: config.candidates,
        check: config.applicability_check,
        min_similarity: config.min_similarity as f32,
        check_prompt: config.check_prompt.clone(),
    }
}

/// How an evolution works, from `[experience]` and the request.
pub fn evolve_options(config: &engram_config::Experience, request: &EvolveInsights) -> EvolveOptions {
    EvolveOptions {
        rewrites: request.rewrites.unwrap_or(config.rewrites),
        min_similarity: config.min_similarity as f32,
        quarantine_hurt: config.quarantine_hurt,
        duplicate_similarity: config.duplicate_similarity as f32,
        prompt: config.evolve_prompt.clone(),
        dry_run: request.dry_run,
    }
}

/// How the learner works, from `[experience]`.
pub fn learn_options(config: &engram_config::Experience) -> LearnOptions {
    LearnOptions {
        lookup: lookup_options(config),
        solve_prompt: config.solve_prompt.clone(),
        reflect_prompt: config.reflect_prompt.clone(),
        duplicate_similarity: config.duplicate_similarity as f32,
        attempt_tokens: 1024,
    }
}

/// The configured model as the library's [`Generator`]: one greedy chat
/// turn, constrained to the schema when one is given.
pub struct LlmGenerator(pub Llm);

impl Generator for LlmGenerator {
    fn name(&self) -> String {
        self.0.name()
    }

    fn complete(&self, ask: Ask) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let message = engram_models::Message::new(engram_models::Role::User, ask.prompt);
            let request = engram_models::GenerateRequest {
                json_schema: ask.schema,
                ..crate::memory::chat_request(vec![message], ask.max_tokens)
            };
            self.0.complete(request).await.map(|(text, _)| text).map_err(|err| err.to_string())
        })
    }
}

/// The `lp` plugin as a verifier of optimization tasks: the attempt is a
/// model in the plugin's JSON format, `lp.solve` solves it, and it passes
/// when the optimum is within `tolerance` (relative) of the task's answer.
pub struct LpVerifier {
    host: Arc<PluginHost>,
    tolerance: f64,
    schema: Option<Value>,
}

/// The tool the [`LpVerifier`] calls.
pub const LP_SOLVE: &str = "lp.solve";

impl LpVerifier {
    /// The verifier over `host`'s `lp` plugin (the attempt's schema is the
    /// tool's `model` argument, less `minProperties`, which constrained
    /// generation does not support).
    pub fn new(host: Arc<PluginHost>, tolerance: f64) -> Result<Self, Error> {
        let tool = host.list_tools().into_iter().find(|tool| tool.name == LP_SOLVE).ok_or_else(|| {
            Error::unavailable(format!("the `{LP_SOLVE}` tool is not loaded (install the lp plugin)"))
        })?;
        let mut schema = tool.input_schema.get("properties").and_then(|p| p.get("model")).cloned();
        if let Some(schema) = &mut schema {
            strip(schema, "minProperties");
        }
        Ok(Self { host, tolerance, schema })
    }
}

/// `schema` without `keyword`, at any depth.
fn strip(schema: &mut Value, keyword: &str) {
    match schema {
        Value::Object(map) => {
            map.remove(keyword);
            map.values_mut().for_each(|value| strip(value, keyword));
        }
        Value::Array(values) => values.iter_mut().for_each(|value| strip(value, keyword)),
        _ => {}
    }
}

impl Verifier for LpVerifier {
    fn name(&self) -> String {
        LP_SOLVE.to_owned()
    }

    fn answer_schema(&self) -> Option<Value> {
        self.schema.clone()
    }

    fn verify<'a>(&'a self, task: &'a Task, attempt: &'a str) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let fail = |detail: String| Verdict { passed: false, detail };
            let model: Value = match serde_json::from_str(attempt) {
                Ok(model) => model,
                Err(err) => return fail(format!("the model is not JSON: {err}")),
            };
            let solved = match self.host.call_tool(LP_SOLVE, json!({"model": model})).await {
                Ok(solved) => solved,
                Err(err) => return fail(format!("the solver refused the model: {err}")),
            };
            let status = solved["status"].as_str().unwrap_or("unknown");
            let Some(objective) = solved["objective"].as_f64().filter(|_| status == "optimal") else {
                return fail(format!("the model is {status}: no optimum to compare with the known answer"));
            };
            let expected = task.answer;
            if (objective - expected).abs() <= self.tolerance * expected.abs().max(1.0) {
                Verdict { passed: true, detail: format!("optimal objective {objective} matches the known answer") }
            } else {
                let values = solved["values"].to_string();
                fail(format!(
                    "the model is solved to an optimal objective of {objective}, but the known optimum is {expected} \
                     (the values: {})",
                    values.chars().take(300).collect::<String>()
                ))
            }
        })
    }
}

/// How `engram eval experience` runs.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// JSON lines of `{task_id, description, ground_truth}`.
    pub tasks: std::path::PathBuf,
    /// The evaluation's own journal and indexes, emptied first (default:
    /// `<cache dir>/eval/experience`).
    pub work_dir: Option<std::path::PathBuf>,
    /// The share of the tasks learned from (the rest are evaluated).
    pub learn_share: f64,
    /// At most this many tasks in each half (0: all).
    pub limit: usize,
    /// The split's seed.
    pub seed: u64,
    /// Tasks run at once.
    pub concurrency: usize,
}

/// Learns a library from half of a task set with the configured model and
/// the `lp` plugin from `plugins.dir` (loaded with nothing granted), then
/// scores three arms on the other half.
pub fn eval(
    config: &engram_config::Config,
    paths: &Paths,
    request: &EvalRequest,
    progress: &(dyn Fn(engram_experience::eval::EvalProgress) + Sync),
) -> Result<engram_experience::eval::ExperienceEval, crate::Error> {
    use engram_experience::eval;
    let tasks = eval::read_tasks(&request.tasks)?;
    let (learn, test) = eval::split(tasks, request.seed, request.learn_share, request.limit);
    let work = request.work_dir.clone().unwrap_or_else(|| paths.cache_dir.join("eval").join("experience"));
    let io = |context: String| move |source| crate::Error::Io { context, source };
    match std::fs::remove_dir_all(&work) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io(format!("cannot empty {}", work.display()))(source)),
    }
    std::fs::create_dir_all(&work).map_err(io(format!("cannot create {}", work.display())))?;
    let store = Store::open(&work.join("journal.sqlite3"), &engram_store::StoreOptions::default())?;
    let embedder = Arc::new(crate::models::load_embedder(config, paths)?);
    let model = embedder.clone();
    let embed: Arc<dyn Embed> =
        Arc::new(EmbedFn::new(embedder.name.clone(), embedder.dim(), move |texts: &[&str]| Ok(model.embed(texts)?)));
    let retriever = Retriever::open(store.clone(), &work.join("index"), embed, &engram_index::VectorBackend::Edge)?;
    let grants = engram_plugin_host::grants::Grants::open(work.join("plugin-grants.toml"))
        .map_err(|err| crate::Error::Config(err.to_string()))?;
    let host = PluginHost::with_grants(Some(paths.cache_dir.join("plugins")), grants)
        .map_err(|err| crate::Error::Config(err.to_string()))?;
    let loaded = host.load_dir(&paths.plugins_dir);
    let host = Arc::new(host);
    let verifier = LpVerifier::new(host, config.experience.tolerance).map_err(|err| {
        let failed: Vec<String> = loaded.failed.iter().map(|f| format!("{f:?}")).collect();
        crate::Error::Config(format!("{} (in {}; {})", err.message, paths.plugins_dir.display(), failed.join("; ")))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("cannot start a runtime".to_owned()))?;
    let llm = runtime.block_on(async { crate::models::load_llm(config, paths) })?;
    let learner = Arc::new(Learner {
        experience: Experience::new(store),
        retriever: Arc::new(retriever),
        generator: Arc::new(LlmGenerator(llm)),
        verifier: Arc::new(verifier),
        options: learn_options(&config.experience),
    });
    Ok(runtime.block_on(eval::evaluate(learner, learn, test, request.concurrency, request.seed, progress))?)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("the insight library panicked: {err}")))?
}
