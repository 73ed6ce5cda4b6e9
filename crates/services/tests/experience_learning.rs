//! Library Learning end to end with a scripted generator — the one test
//! double: the journal, the insights' tantivy and qdrant-edge indexes, the
//! embedder (all-MiniLM-L6-v2), the verifier and the `lp` plugin (built
//! from `plugins/` by `scripts/build-plugins`) are real. A known failure
//! yields a known insight, admitted because it fixes the task on re-run;
//! one that copies the task's numbers and one that fixes nothing are
//! retired; a near-copy of the admitted one is merged; and a later task of
//! the same kind finds the insight and passes at once.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use engram_experience::evolve::{EVOLVER, evolve};
use engram_experience::learn::{Fate, Learner};
use engram_experience::ops::EvolveInsights;
use engram_experience::record::{NewRetrieval, Weighed};
use engram_experience::retrieve::Retriever;
use engram_experience::task::{Ask, BoxFuture, Generator, Task, Verifier};
use engram_experience::{Experience, Provenance, Status, Text};
use engram_index::{Embed, EmbedFn, VectorBackend};
use engram_plugin_host::PluginHost;
use engram_plugin_host::grants::Grants;
use engram_services::experience::{LpVerifier, evolve_options, learn_options};
use engram_store::{Store, StoreOptions};
use serde_json::{Value, json};

include!("../../models/tests/common/mod.rs");

/// The words of the insight that fixes the storage tasks: a prompt that
/// carries them gets the right model.
const SHARED_LIMIT: &str = "Several products share one storage limit";

/// Writes what a small model might: a model that gives each product the
/// whole warehouse unless the prompt carries the insight about shared
/// limits; reflections from a script; every candidate applies.
struct Scripted {
    reflections: Mutex<VecDeque<Value>>,
    prompts: Mutex<Vec<String>>,
}

impl Generator for Scripted {
    fn name(&self) -> String {
        "scripted".to_owned()
    }

    fn complete(&self, ask: Ask) -> BoxFuture<'_, Result<String, String>> {
        self.prompts.lock().unwrap().push(ask.prompt.clone());
        let answer = if ask.prompt.contains("failed its check") {
            self.reflections.lock().unwrap().pop_front().expect("a reflection scripted")
        } else if ask.prompt.contains("Rewrite its condition") {
            json!({"conditions": [
                "Nurses are scheduled over the shifts of a hospital",
                "Chairs and tables share one warehouse of limited storage",
            ]})
        } else if ask.prompt.contains("Which of these insights apply") {
            let ids: Vec<&str> = ask.prompt.lines().filter_map(|l| l.strip_prefix("- ")?.split(':').next()).collect();
            json!({"applicable": ids})
        } else {
            // Numbers of the task: profits, hours per piece, hours, storage.
            let numbers: Vec<f64> = ask
                .prompt
                .rsplit("Problem:")
                .next()
                .unwrap_or_default()
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            let [p1, p2, h1, h2, hours, storage] = numbers[..] else {
                return Box::pin(async { Err("no task".into()) });
            };
            let mut constraints = vec![json!({"terms": {"a": h1, "b": h2}, "op": "<=", "rhs": hours})];
            if ask.prompt.contains(SHARED_LIMIT) {
                constraints.push(json!({"terms": {"a": 1, "b": 1}, "op": "<=", "rhs": storage}));
            } else {
                constraints.push(json!({"terms": {"a": 1}, "op": "<=", "rhs": storage}));
                constraints.push(json!({"terms": {"b": 1}, "op": "<=", "rhs": storage}));
            }
            json!({
                "sense": "maximize",
                "objective": {"a": p1, "b": p2},
                "variables": {"a": {"lower": 0}, "b": {"lower": 0}},
                "constraints": constraints,
            })
        };
        Box::pin(async move { Ok(answer.to_string()) })
    }
}

fn storage_task(id: &str, numbers: [u32; 6], answer: f64) -> Task {
    let [p1, p2, h1, h2, hours, storage] = numbers;
    Task {
        id: id.to_owned(),
        text: format!(
            "A workshop makes chairs and tables: a chair earns {p1} yuan and a table {p2}. A chair takes {h1} hours \
             of carpentry and a table {h2}; {hours} hours are available. Chairs and tables go into one warehouse \
             that holds {storage} pieces. How many of each maximize the profit?"
        ),
        answer,
    }
}

fn insight(taxonomy: &str, condition: &str, example: &str) -> Value {
    json!({
        "taxonomy": taxonomy,
        "condition": condition,
        "explanation": "A limit that products share binds their sum; giving each product the whole limit \
                        overstates what can be made.",
        "example": example,
    })
}

/// The real parts (journal, indexes, embedder, the `lp` plugin as
/// verifier) around a scripted generator that reflects as `reflections` say.
fn learner(reflections: Vec<Value>) -> (Learner, Arc<Scripted>, tempfile::TempDir) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = tempfile::tempdir().unwrap();
    let installed = state.path().join("plugins");
    let status = std::process::Command::new(root.join("scripts/build-plugins"))
        .arg(&installed)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/build-plugins");
    assert!(status.success(), "scripts/build-plugins failed");
    let host =
        Arc::new(PluginHost::with_grants(None, Grants::open(state.path().join("grants.toml")).unwrap()).unwrap());
    let report = host.load_dir(&installed);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let verifier: Arc<dyn Verifier> = Arc::new(LpVerifier::new(host, 0.001).unwrap());

    let store = Store::open(&state.path().join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    let pool = engram_models::inference_pool(2, "test-embed").unwrap();
    let embedder = Arc::new(engram_models::Embedder::load(&minilm(), &engram_models::Device::Cpu, pool, 16).unwrap());
    let model = embedder.clone();
    let embed: Arc<dyn Embed> =
        Arc::new(EmbedFn::new(embedder.name.clone(), embedder.dim(), move |texts: &[&str]| Ok(model.embed(texts)?)));
    let retriever =
        Arc::new(Retriever::open(store.clone(), &state.path().join("insights"), embed, &VectorBackend::Edge).unwrap());
    let experience = Experience::new(store);

    let generator = Arc::new(Scripted { reflections: Mutex::new(reflections.into()), prompts: Mutex::new(Vec::new()) });
    let mut options = learn_options(&learner_config());
    options.lookup.check = true;
    let learner = Learner { experience, retriever, generator: generator.clone(), verifier, options };
    (learner, generator, state)
}

/// The insight that fixes the storage tasks, as reflection writes it.
fn good_insight(example: &str) -> Value {
    let good = SHARED_LIMIT.to_owned() + ", such as one warehouse or one budget that holds all of them together";
    insight("Formulation / Constraints / Capacity", &good, example)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_failure_teaches_an_insight_that_fixes_the_task_and_the_next_one() {
    let (learner, _, _state) = learner(vec![
        json!({"insights": [
            insight("formulation/constraints/capacity", "Chairs and tables share a warehouse", "a + b <= 40"),
            insight("formulation/variables", "Items are whole pieces of furniture", "Declare a and b integer."),
        ]}),
        json!({"insights": [good_insight("x + y <= capacity")]}),
        json!({"insights": [good_insight("x + y <= capacity, always")]}),
    ]);
    let experience = learner.experience.clone();
    // 30a + 50b, 2a + 4b <= 120, a + b <= 40: 1600 (1700 with the
    // warehouse given to each product).
    let first = storage_task("shop-1", [30, 50, 2, 4, 120, 40], 1600.0);
    let learned = learner.learn(&first).await.unwrap();
    assert!(!learned.attempt.verdict.passed);
    assert!(learned.attempt.verdict.detail.contains("1700"), "{}", learned.attempt.verdict.detail);
    let [Fate::CopiesTask { id: copy, numbers }, Fate::DidNotFix { id: useless, .. }] = &learned.candidates[..] else {
        panic!("{:?}", learned.candidates)
    };
    assert_eq!(numbers, &["40"]);

    let learned = learner.learn(&first).await.unwrap();
    let [Fate::Admitted { id: admitted }] = &learned.candidates[..] else { panic!("{:?}", learned.candidates) };
    let library = experience.library().unwrap();
    assert_eq!(library[admitted].status, Status::Active);
    assert_eq!(library[admitted].text.taxonomy, "formulation/constraints/capacity");
    assert_eq!(library[admitted].provenance.task.as_deref(), Some("shop-1"));
    assert_eq!(library[admitted].provenance.model.as_deref(), Some("scripted"));
    for retired in [copy, useless] {
        assert_eq!(library[retired].status, Status::Retired);
    }
    // Every step is an event: created as a candidate, then judged.
    let history: Vec<String> =
        experience.events(Some(admitted)).unwrap().iter().map(|e| serde_json::to_string(&e.change).unwrap()).collect();
    assert!(history[0].contains("\"candidate\"") && history[1].contains("fixed task shop-1 on re-run"), "{history:?}");

    // Another shop, other numbers: the lookup finds the insight (its
    // condition is like the task), and the first attempt passes.
    // 20a + 30b, 1a + 2b <= 100, a + b <= 70: 1700 (1850 without).
    let second = storage_task("shop-2", [20, 30, 1, 2, 100, 70], 1700.0);
    let learned = learner.learn(&second).await.unwrap();
    assert!(learned.attempt.verdict.passed, "{:?}", learned.attempt);
    assert_eq!(learned.attempt.insights, std::slice::from_ref(admitted));
    assert!(learned.candidates.is_empty());

    // A failure whose reflection repeats the admitted insight: merged.
    let third = storage_task("shop-3", [5, 9, 1, 3, 60, 30], 123.0);
    let learned = learner.learn(&third).await.unwrap();
    let [Fate::Merged { into, similarity, .. }] = &learned.candidates[..] else { panic!("{:?}", learned.candidates) };
    assert_eq!(into, admitted);
    assert!(*similarity > 0.92);

    // The record: three lookups' outcomes counted on what they chose.
    let library = experience.library().unwrap();
    let counters = library[admitted].counters;
    assert_eq!((counters.retrieved, counters.helped, counters.hurt), (2, 1, 1), "{counters:?}");
    let retrievals = experience.retrievals().unwrap();
    assert_eq!(retrievals.len(), 4);
    assert!(retrievals.iter().all(|r| r.outcomes.len() == 1 && r.outcomes[0].judge == "lp.solve"));
    assert!(retrievals[2].checked && retrievals[2].task_id == "shop-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluation_scores_the_three_arms_on_what_learning_admitted() {
    let (learner, generator, _state) = learner(vec![json!({"insights": [good_insight("x + y <= capacity")]})]);
    let learn = vec![storage_task("shop-1", [30, 50, 2, 4, 120, 40], 1600.0)];
    let test = vec![
        storage_task("shop-2", [20, 30, 1, 2, 100, 70], 1700.0),
        // 10a + 10b, a + b <= 30 (hours), storage 50: 300 either way.
        storage_task("shop-4", [10, 10, 1, 1, 30, 50], 300.0),
    ];
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let report = engram_experience::eval::evaluate(Arc::new(learner), learn, test, 2, 1, &|_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!((report.learning.tasks, report.learning.admitted, report.library), (1, 1, 1), "{report:?}");
    let arm = |name: &str| (report.arms[name].passed, report.arms[name].tasks);
    // Without the insight the shared storage is missed on shop-2; shop-4's
    // storage never binds.
    assert_eq!(arm("none"), (1, 2));
    assert_eq!(arm("learned"), (2, 2));
    // The random arm draws as many insights from a library of one: the same.
    assert_eq!(arm("random"), (2, 2));
    assert_eq!((report.retrieved_tasks, report.helpful_retrieval_rate, report.harmful_retrieval_rate), (2, 0.5, 0.0));
    assert!(report.arms["learned"].interval[0] > 0.0 && report.arms["none"].interval[1] < 1.0);
    assert_eq!((report.model.as_str(), report.verifier.as_str()), ("scripted", "lp.solve"));
    assert_eq!(seen.into_inner(), 3, "a tick per task learned and evaluated");
    assert!(generator.prompts.lock().unwrap().iter().any(|p| p.contains("Which of these insights apply")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_rewrites_misaligned_conditions_quarantines_harm_and_merges_duplicates_reversibly() {
    let (learner, _, _state) = learner(Vec::new());
    let experience = learner.experience.clone();
    let create = |taxonomy: &str, condition: &str| {
        let text = Text {
            taxonomy: taxonomy.to_owned(),
            condition: condition.to_owned(),
            explanation: "Why it matters.".to_owned(),
            example: "A short case.".to_owned(),
        };
        experience.create("ana", text, Status::Active, Provenance::default()).unwrap().id
    };
    let misaligned = create("formulation/constraints/capacity", "Fuel is bought for a fleet of aircraft");
    let harmful = create("formulation/objective", "Profit is the selling price");
    let elder = create("formulation/variables", "Whole items such as machines or people are integer variables");
    let younger = create("formulation/variables", "Whole items such as machines or people are integer variables");
    let nurses = |id: &str| Task {
        id: id.to_owned(),
        text: "A hospital schedules nurses over three shifts a day; each shift needs a minimum number of nurses. \
               Minimize the nurses hired."
            .to_owned(),
        answer: 0.0,
    };
    let judged = |task: &Task, chosen: &str, passed: bool| {
        let chosen = [chosen.to_owned()];
        let retrieval = experience
            .record_retrieval(&NewRetrieval {
                tenant: "",
                task_id: &task.id,
                task: &task.text,
                candidates: &[Weighed { id: chosen[0].clone(), score: 1.0 }],
                chosen: &chosen,
                checked: false,
            })
            .unwrap();
        experience.record_outcome("", retrieval, passed, "lp.solve", "").unwrap();
    };
    // Retrieved for storage tasks it helped and nurse tasks it did not.
    judged(&storage_task("shop-1", [30, 50, 2, 4, 120, 40], 1600.0), &misaligned, true);
    judged(&storage_task("shop-2", [20, 30, 1, 2, 100, 70], 1700.0), &misaligned, true);
    judged(&nurses("ward-1"), &misaligned, false);
    judged(&nurses("ward-2"), &misaligned, false);
    for n in 0..3 {
        judged(&nurses(&format!("ward-{}", 3 + n)), &harmful, false);
    }

    let options = |dry_run| evolve_options(&learner_config(), &EvolveInsights { dry_run, rewrites: None });
    let events = experience.events(None).unwrap().len();
    let dry = evolve(&experience, &learner.retriever, learner.generator.as_ref(), &options(true)).await.unwrap();
    assert_eq!(experience.events(None).unwrap().len(), events, "a dry run records nothing");
    let evolution = evolve(&experience, &learner.retriever, learner.generator.as_ref(), &options(false)).await.unwrap();
    assert_eq!(
        (dry.rewritten.clone(), dry.quarantined.clone()),
        (evolution.rewritten.clone(), evolution.quarantined.clone())
    );

    let [rewritten] = &evolution.rewritten[..] else { panic!("{evolution:?}") };
    assert_eq!(rewritten.id, misaligned);
    assert_eq!(rewritten.to, "Chairs and tables share one warehouse of limited storage");
    assert!(rewritten.margin_after > rewritten.margin_before + 0.05 && rewritten.tasks == 4, "{rewritten:?}");
    let [quarantined] = &evolution.quarantined[..] else { panic!("{evolution:?}") };
    assert_eq!(quarantined.id, harmful);
    assert!(quarantined.reason.contains("hurt 3 times") && quarantined.reason.contains("ward-3"), "{quarantined:?}");
    let [merged] = &evolution.merged[..] else { panic!("{evolution:?}") };
    assert_eq!(
        (merged.id.as_str(), merged.reason.starts_with(&format!("merged into {elder}"))),
        (younger.as_str(), true)
    );

    let library = experience.library().unwrap();
    assert_eq!(library[&harmful].status, Status::Quarantined);
    assert_eq!(library[&younger].status, Status::Retired);
    let history = experience.events(Some(&misaligned)).unwrap();
    assert_eq!(history.last().unwrap().editor, EVOLVER);
    // A quarantined insight is offered no more.
    let offered = learner.retriever.candidates(&nurses("ward-9").text, None, 10).unwrap();
    assert!(offered.iter().all(|c| c.insight.id != harmful && c.insight.id != younger));

    // Reversible: the condition and the status come back, as events.
    let reverted = experience.revert("ana", &misaligned, 1).unwrap();
    assert_eq!(reverted.text.condition, "Fuel is bought for a fleet of aircraft");
    assert_eq!(experience.revert("ana", &harmful, 1).unwrap().status, Status::Active);
    assert!(experience.revert("ana", &harmful, 1).unwrap_err().to_string().contains("already reads"));
    assert!(experience.revert("ana", &harmful, 9).unwrap_err().to_string().contains("versions 1 to 3"));
}

fn learner_config() -> engram_config::Experience {
    engram_config::Loader::new().load().unwrap().config.experience
}
