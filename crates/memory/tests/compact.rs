//! Compact memory and the context assembler on real parts: the journal,
//! the indexes, MiniLM for recall, and SmolLM2-135M's own tokenizer, chat
//! template and weights for counting and summarizing.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use engram_memory::assemble::{AssembleOptions, CountTokens};
use engram_memory::{Forget, Memory, NewTurn, RecallOptions, Scope, SummaryPrompts};
use engram_models::{
    Embedder, GenerateRequest, LocalModel, LocalOptions, Message, Prompt, Role, SamplingParams, TokenSink,
};
use engram_ops::{ConversationId, TenantId};
use engram_store::{Store, StoreOptions};
use rand::{Rng, SeedableRng};

include!("../../models/tests/common/mod.rs");

fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let pool = engram_models::inference_pool(2, "test-embed").unwrap();
            Arc::new(Embedder::load(&minilm(), &engram_models::Device::Cpu, pool, 16).expect("load all-MiniLM-L6-v2"))
        })
        .clone()
}

fn smollm() -> LocalModel {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path().to_path_buf();
    let options = LocalOptions {
        device: engram_models::Device::Cpu,
        context_tokens: 2048,
        cache_dir: cache,
        convert_slow_types: true,
        native_cpu: true,
    };
    LocalModel::load(&smollm2(), &options).expect("load SmolLM2")
}

fn open(dir: &Path) -> Memory {
    let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    Memory::open(store, &dir.join("memory"), embedder(), &engram_index::VectorBackend::Edge, RecallOptions::default())
        .unwrap()
}

fn scope(tenant: &str, conversation: &str) -> Scope {
    Scope { tenant: Some(TenantId::new(tenant).unwrap()), conversation: ConversationId::new(conversation).unwrap() }
}

fn turn(speaker: &str, text: &str, time_ms: i64) -> NewTurn {
    NewTurn { time_ms: Some(time_ms), ..NewTurn::new(speaker, text) }
}

fn prompts() -> SummaryPrompts {
    let config: engram_config::Config = toml::from_str(engram_config::DEFAULT_TOML).unwrap();
    SummaryPrompts { summary: config.memory.summary_prompt, rollup: config.memory.rollup_prompt, rollup_every: 4 }
}

/// Runs summary jobs with the real model until `scope` is caught up.
fn summarize(memory: &Memory, model: &mut LocalModel, scope: &Scope) -> usize {
    struct Sink(String);
    impl TokenSink for Sink {
        fn send(&mut self, text: &str) -> bool {
            self.0.push_str(text);
            true
        }
        fn is_cancelled(&self) -> bool {
            false
        }
    }
    let mut jobs = 0;
    while let Some(job) = memory.next_summary(scope, &prompts()).unwrap() {
        let request = GenerateRequest {
            prompt: Prompt::Chat(vec![Message::new(Role::User, job.prompt.clone())]),
            sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
            max_tokens: 80,
            stop: Vec::new(),
            json_schema: None,
        };
        let mut sink = Sink(String::new());
        model.generate(&request, &mut sink).unwrap();
        assert!(memory.store_summary(&job, &sink.0, "SmolLM2").unwrap());
        jobs += 1;
        assert!(jobs < 100, "the summarizer does not converge");
    }
    jobs
}

/// The assembled prompt never exceeds the budget, counted by the model's
/// own tokenizer and template, whatever the turns' lengths — one of them
/// longer than the whole budget — and its report adds up.
#[test]
fn the_assembled_prompt_never_exceeds_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let counter = smollm().counter();
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let words = ["river", "piano", "Lisbon", "allergy", "garden", "invoice", "rocket", "sister", "tram", "fado"];
    for case in 0..6 {
        let chat = scope("ada", &format!("case-{case}"));
        let turns = rng.random_range(1..40);
        let long_one = rng.random_range(0..turns);
        for i in 0..turns {
            let n = if i == long_one { 3_000 } else { rng.random_range(1..120) };
            let text: Vec<&str> = (0..n).map(|_| words[rng.random_range(0..words.len())]).collect();
            let speaker = if i % 2 == 0 { "user" } else { "assistant" };
            memory.append(&chat, turn(speaker, &text.join(" "), 1_700_000_000_000 + i as i64 * 60_000)).unwrap();
        }
        memory.catch_up().unwrap();
        let budget = rng.random_range(300..1_500);
        let options = AssembleOptions {
            budget,
            recent_turns: rng.random_range(0..10),
            recall_k: rng.random_range(0..10),
            system_prompt: "You are helpful.".into(),
        };
        let message_words = if case == 0 { 5_000 } else { 12 };
        let message: Vec<&str> = (0..message_words).map(|i| words[i % words.len()]).collect();
        let assembled = memory.assemble(&chat, &message.join(" "), &options, &counter, None).unwrap();
        let messages: Vec<Message> = assembled
            .messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" => Role::System,
                    "assistant" => Role::Assistant,
                    _ => Role::User,
                };
                Message::new(role, m.content.clone())
            })
            .collect();
        let counted = CountTokens::count(&counter, &messages).unwrap();
        assert_eq!(counted, assembled.tokens, "case {case}");
        assert!(assembled.tokens <= budget, "case {case}: {} > {budget}", assembled.tokens);
        assert_eq!(assembled.included.iter().map(|p| p.tokens).sum::<usize>(), assembled.tokens, "case {case}");
        assert_eq!(assembled.counted_with, "tokenizer");
        // The 3,000-word turn never fits these budgets: it is reported left out.
        let long_in = assembled.included.iter().any(|p| p.turn == Some(long_one as u64));
        assert!(!long_in, "case {case}");
        if case == 0 {
            assert!(assembled.included[0].why.contains("cut"), "{:?}", assembled.included[0]);
            assert!(assembled.messages.last().unwrap().content.starts_with('…'));
        } else {
            assert_eq!(assembled.messages.last().unwrap().content, message.join(" "));
        }
        // Recalled and recent turns are distinct, and those in are in the prompt.
        let mut seen = std::collections::HashSet::new();
        for part in assembled.included.iter().filter(|p| p.turn.is_some()) {
            assert!(seen.insert(part.turn), "case {case}: {part:?} twice");
        }
    }
    // A conversation that does not exist yet gets the system prompt and the message.
    let options = AssembleOptions { budget: 3_500, recent_turns: 8, recall_k: 10, system_prompt: "Hi.".into() };
    let fresh = memory.assemble(&scope("ada", "new"), "hello", &options, &counter, None).unwrap();
    assert_eq!(fresh.messages.len(), 2);
    assert_eq!(fresh.included.len(), 1);
}

/// The real model keeps a running summary as turns arrive, rolls it up,
/// and forgetting a turn removes every summary that covered it before the
/// summarizer writes them again from what is left.
#[test]
fn compact_memory_follows_the_conversation_and_forgets_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let mut model = smollm();
    let chat = scope("ada", "trip");
    let said = [
        ("user", "Hi, I'm Ada. I'm planning a trip to Lisbon with my sister Maria in May."),
        ("assistant", "Lovely! Lisbon in May is warm. Do you need restaurant ideas?"),
        ("user", "Yes. Maria is allergic to peanuts, and my locker code is zorblatt-7731."),
        ("assistant", "Noted. I will suggest places without peanuts."),
        ("user", "We also want to see a fado show."),
        ("assistant", "The Alfama district has the best fado houses."),
    ];
    // As in the daemon: a summary after each turn.
    for (i, (speaker, text)) in said.iter().enumerate() {
        memory.append(&chat, turn(speaker, text, 1_700_000_000_000 + i as i64 * 60_000)).unwrap();
        assert_eq!(memory.compact(&chat).unwrap().pending_turns, 1);
        assert_eq!(memory.behind().unwrap(), std::slice::from_ref(&chat));
        assert!(summarize(&memory, &mut model, &chat) >= 1);
    }
    let compact = memory.compact(&chat).unwrap();
    assert_eq!(compact.pending_turns, 0);
    let level1 = compact.level1.expect("a level-1 summary");
    assert_eq!(level1.last_ordinal, 5);
    assert!(!level1.text.is_empty() && !level1.text.contains('\n'), "{level1:?}");
    let level2 = compact.level2.expect("a roll-up after 4 turns");
    assert!(level2.last_ordinal >= 3);
    assert!(memory.behind().unwrap().is_empty());
    let history = memory.summary_history(&chat).unwrap();
    assert_eq!(history.iter().filter(|s| s.level == 1).count(), 6, "{history:?}");
    for summary in &history {
        eprintln!("level {} to turn {}: {}", summary.level, summary.last_ordinal, summary.text);
    }

    // Forget the turn with the locker code: every summary that covered it
    // goes; those written before it stay.
    memory.forget(&Forget::Turn(chat.clone(), 2)).unwrap();
    let left = memory.summary_history(&chat).unwrap();
    assert!(left.iter().all(|s| s.last_ordinal < 2), "{left:?}");
    assert!(left.iter().all(|s| !s.text.contains("zorblatt")));
    assert_eq!(memory.behind().unwrap(), std::slice::from_ref(&chat));
    summarize(&memory, &mut model, &chat);
    let again = memory.summary_history(&chat).unwrap();
    assert!(again.iter().all(|s| !s.text.contains("zorblatt") && !s.text.contains("7731")), "{again:?}");
    assert_eq!(memory.compact(&chat).unwrap().level1.map(|s| s.last_ordinal), Some(5));

    // A job read before a forget is refused after it.
    memory.append(&chat, turn("user", "One more thing: we fly on the 3rd.", 1_700_000_900_000)).unwrap();
    let job = memory.next_summary(&chat, &prompts()).unwrap().expect("a job");
    memory.forget(&Forget::Turn(chat.clone(), 6)).unwrap();
    assert!(!memory.store_summary(&job, "Ada flies on the 3rd.", "SmolLM2").unwrap());
}
