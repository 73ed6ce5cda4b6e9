//! The memory engine on real parts: an SQLite journal, tantivy and
//! qdrant-edge indexes on temp dirs, and the all-MiniLM-L6-v2 embedder.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use engram_index::VectorBackend;
use engram_memory::{Forget, Memory, MemoryError, NewTurn, RecallOptions, Scope};
use engram_models::Embedder;
use engram_ops::{ConversationId, TenantId};
use engram_store::{Store, StoreOptions};
use rand::{Rng, SeedableRng};

include!("../../models/tests/common/mod.rs");

fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let device = engram_models::Device::Cpu;
            let pool = engram_models::inference_pool(2, "test-embed").unwrap();
            Arc::new(Embedder::load(&minilm(), &device, pool, 16).expect("load all-MiniLM-L6-v2"))
        })
        .clone()
}

fn open(dir: &Path) -> Memory {
    let store = Store::open(&dir.join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    Memory::open(store, &dir.join("memory"), embedder(), &VectorBackend::Edge, RecallOptions::default()).unwrap()
}

fn scope(tenant: Option<&str>, conversation: &str) -> Scope {
    Scope {
        tenant: tenant.map(|t| TenantId::new(t).unwrap()),
        conversation: ConversationId::new(conversation).unwrap(),
    }
}

fn turn(speaker: &str, text: &str) -> NewTurn {
    NewTurn::new(speaker, text)
}

#[test]
fn turns_are_acknowledged_then_recalled_verbatim_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let chat = scope(Some("ada"), "trip");
    let said = [
        ("user", "I am planning a trip to Lisbon in May."),
        ("assistant", "Lisbon in May is lovely; book the tram tours early."),
        ("user", "My sister Maria is allergic to peanuts, remember that for restaurants."),
        ("assistant", "Noted: no peanuts for Maria."),
        ("user", "We also want to see a fado show one evening."),
    ];
    for (i, (speaker, text)) in said.iter().enumerate() {
        let stored = memory.append(&chat, turn(speaker, text)).unwrap();
        assert_eq!((stored.ordinal, stored.text.as_str()), (i as u64, *text));
    }
    memory.catch_up().unwrap();
    let (bm25, dense) = memory.index_ids(&chat).unwrap();
    assert_eq!((bm25.len(), dense.len()), (5, 5));

    // The fact, and the reply indexed with the turn it answers, come before
    // the turns about something else.
    let recalled = memory.recall(&chat, "which food allergy does my sister have?", 2, None).unwrap().turns;
    let mut found: Vec<(u64, &str, &str)> =
        recalled.iter().map(|r| (r.turn.ordinal, r.turn.speaker.as_str(), r.turn.text.as_str())).collect();
    found.sort_unstable();
    assert_eq!(found, [(2, "user", said[2].1), (3, "assistant", said[3].1)], "{recalled:?}");

    let listed = memory.conversations(Some(&TenantId::new("ada").unwrap())).unwrap();
    assert_eq!((listed.len(), listed[0].turns), (1, 5));
    assert_eq!(memory.turns(&chat, 3, 10).unwrap().len(), 2);

    // Reopened on the same journal, the indexes are where they were; wiped,
    // they are rebuilt from it.
    drop(memory);
    std::fs::remove_dir_all(dir.path().join("memory")).unwrap();
    let memory = open(dir.path());
    let recalled = memory.recall(&chat, "fado show", 1, None).unwrap().turns;
    assert_eq!(recalled[0].turn.ordinal, 4, "{recalled:?}");
}

#[test]
fn bad_turns_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let chat = scope(None, "notes");
    for (bad, phrase) in [
        (turn("user", "   "), "`text` is empty"),
        (turn("", "hello"), "`speaker` is empty"),
        (NewTurn { importance: 1.5, ..turn("user", "hello") }, "from 0 to 1"),
    ] {
        let err = memory.append(&chat, bad).unwrap_err();
        assert!(matches!(err, MemoryError::Invalid(_)) && err.to_string().contains(phrase), "{err}");
    }
    assert!(memory.conversations(None).unwrap().is_empty());
    let err = memory.recall(&chat, "anything", 3, None).unwrap_err();
    assert!(matches!(err, MemoryError::NotFound(_)) && err.to_string().contains("no conversation `notes`"), "{err}");
}

/// Random tenants (and the operator) with random conversations sharing
/// names across tenants: every recall and listing stays inside its scope.
#[test]
fn scopes_never_leak_into_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let tenants = [None, Some("ada"), Some("bob"), Some("carol")];
    let conversations = ["main", "work", "ada"];
    let words = ["apple", "harbor", "violin", "glacier", "pepper", "comet", "saddle", "lantern"];
    let mut written: Vec<(Scope, String)> = Vec::new();
    for i in 0..120 {
        let tenant = tenants[rng.random_range(0..tenants.len())];
        let chat = scope(tenant, conversations[rng.random_range(0..conversations.len())]);
        let text = format!("note {i}: the {} by the {}", words[rng.random_range(0..8)], words[rng.random_range(0..8)]);
        memory.append(&chat, turn("user", &text)).unwrap();
        written.push((chat, text));
    }
    memory.catch_up().unwrap();
    let scopes: HashSet<Scope> = written.iter().map(|(s, _)| s.clone()).collect();
    for chat in &scopes {
        let own: HashSet<&str> = written.iter().filter(|(s, _)| s == chat).map(|(_, t)| t.as_str()).collect();
        for word in words {
            for recalled in memory.recall(chat, word, 20, None).unwrap().turns {
                assert!(own.contains(recalled.turn.text.as_str()), "{chat:?} recalled {:?}", recalled.turn.text);
            }
        }
        let listed = memory.turns(chat, 0, 1000).unwrap();
        assert_eq!(listed.len(), own.len(), "{chat:?}");
        assert!(listed.iter().all(|t| own.contains(t.text.as_str())));
        let (bm25, dense) = memory.index_ids(chat).unwrap();
        let ids: Vec<u64> = listed.iter().map(|t| t.id).collect();
        assert_eq!((&bm25, &dense), (&ids, &ids), "{chat:?}");
    }
    for tenant in tenants {
        let tenant = tenant.map(|t| TenantId::new(t).unwrap());
        let listed = memory.conversations(tenant.as_ref()).unwrap();
        let expected: usize = scopes.iter().filter(|s| s.tenant == tenant).count();
        assert_eq!(listed.len(), expected, "{tenant:?}");
    }
}

/// Forgetting a turn, a time range, a conversation or a tenant leaves no
/// trace of the text: not in the journal, not in either index, not in the
/// embedding cache; other scopes keep theirs.
#[test]
fn forgetting_leaves_nothing_derived_behind() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let (ada, bob) = (scope(Some("ada"), "diary"), scope(Some("bob"), "diary"));
    let planted = "My locker code is zorblatt-7731, keep it secret.";
    for (i, text) in ["Breakfast was porridge.", planted, "The train was late again."].into_iter().enumerate() {
        let at = NewTurn { time_ms: Some(1_000 * (i as i64 + 1)), ..turn("user", text) };
        memory.append(&ada, at.clone()).unwrap();
        memory.append(&bob, at).unwrap();
    }
    memory.catch_up().unwrap();
    // The planted turn is indexed with the turn before it; the turn after
    // it is indexed with it: both documents carry the planted text.
    let documents = |chat: &Scope| -> Vec<String> {
        let ids: Vec<u64> = memory.turns(chat, 0, 100).unwrap().iter().map(|t| t.id).collect();
        ids.into_iter().filter_map(|id| memory.document(chat, id).unwrap()).collect()
    };
    let planted_documents: Vec<String> = documents(&ada).into_iter().filter(|d| d.contains("zorblatt")).collect();
    assert_eq!(planted_documents.len(), 2);
    for document in &planted_documents {
        assert!(memory.is_embedded(document).unwrap());
    }
    let traces = |chat: &Scope| -> (bool, bool) {
        let journal = memory.turns(chat, 0, 100).unwrap().iter().any(|t| t.text.contains("zorblatt"));
        let recalled = memory.recall(chat, "zorblatt-7731 locker code", 10, None).unwrap().turns;
        let indexed = recalled.iter().any(|r| r.turn.text.contains("zorblatt"));
        let (bm25, dense) = memory.index_ids(chat).unwrap();
        let journal_ids: Vec<u64> = memory.turns(chat, 0, 100).unwrap().iter().map(|t| t.id).collect();
        assert_eq!((&bm25, &dense), (&journal_ids, &journal_ids), "indexes follow the journal");
        // Nothing left is indexed with the planted text, and what is left
        // is embedded as it now reads.
        for document in documents(chat) {
            assert!(journal || !document.contains("zorblatt"), "{document}");
            assert!(memory.is_embedded(&document).unwrap(), "{document}");
        }
        // BM25 no longer finds the planted word anywhere in this scope.
        let found = memory.recall(chat, "zorblatt", 10, None).unwrap().turns;
        assert_eq!(found.iter().any(|r| r.score > 0.5), journal, "{found:?}");
        (journal, indexed)
    };
    assert_eq!(traces(&ada), (true, true));

    // Ada forgets the turn: her planted text is gone everywhere; Bob's
    // identical turns stay, so their cached embeddings do too.
    assert_eq!(memory.forget(&Forget::Turn(ada.clone(), 1)).unwrap(), 1);
    assert_eq!(traces(&ada), (false, false));
    assert_eq!(traces(&bob), (true, true));
    for document in &planted_documents {
        assert!(memory.is_embedded(document).unwrap(), "still said by Bob");
    }

    // Bob forgets by time range; now no embedding of it is left either.
    assert_eq!(memory.forget(&Forget::Range(bob.clone(), 2_000, 3_000)).unwrap(), 1);
    assert_eq!(traces(&bob), (false, false));
    for document in &planted_documents {
        assert!(!memory.is_embedded(document).unwrap(), "{document}");
    }

    // A whole conversation, then a whole tenant.
    assert_eq!(memory.forget(&Forget::Conversation(ada.clone())).unwrap(), 2);
    assert!(memory.conversations(ada.tenant.as_ref()).unwrap().is_empty());
    assert_eq!(memory.forget(&Forget::Tenant(bob.tenant.clone())).unwrap(), 2);
    assert!(memory.conversations(bob.tenant.as_ref()).unwrap().is_empty());
    assert!(!memory.is_embedded("user: Breakfast was porridge.").unwrap());
    // Forgetting what is not there forgets nothing.
    assert_eq!(memory.forget(&Forget::Conversation(scope(None, "nothing"))).unwrap(), 0);
}

/// A query that names a time ("last week", "in May") prefers what was
/// said then, and says how it read the time.
#[test]
fn recall_prefers_the_time_the_query_names() {
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let chat = scope(None, "kitchen");
    let day = 86_400_000_i64;
    // 2023-05-10, 2023-10-25 and 2023-10-30 (a Monday), noon UTC.
    let (may, october, lately) = (1_683_720_000_000, 1_698_235_200_000, 1_698_667_200_000);
    let chatter = ["The weather turned.", "Work was busy today.", "I watched a film.", "The cat slept all day."];
    for (at, text) in [
        (may, "I cooked a mushroom risotto for dinner."),
        (october, "I cooked a pumpkin risotto for dinner."),
        (lately, "I cooked a lemon risotto for dinner."),
    ] {
        memory.append(&chat, NewTurn { time_ms: Some(at), ..turn("user", text) }).unwrap();
        for (i, other) in chatter.iter().enumerate() {
            memory
                .append(&chat, NewTurn { time_ms: Some(at + i as i64 * 60_000), ..turn("assistant", other) })
                .unwrap();
        }
    }
    memory.catch_up().unwrap();
    let now = Some(lately + 2 * day);
    for (query, expected, phrase) in [
        ("which risotto did I cook in May?", "mushroom", "may"),
        ("which risotto did I cook last week?", "pumpkin", "last week"),
        ("which risotto did I cook this week?", "lemon", "this week"),
    ] {
        let found = memory.recall(&chat, query, 3, now).unwrap();
        assert_eq!(found.time.as_ref().map(|w| w.phrase.as_str()), Some(phrase), "{query}");
        // First comes the turn said then, or the reply indexed with it.
        let said = found.turns.iter().position(|r| r.turn.text.contains(expected));
        assert!(said.is_some_and(|at| at <= 1), "{query}: {found:?}");
    }
    let found = memory.recall(&chat, "which risotto did I cook?", 3, now).unwrap();
    assert_eq!(found.time, None, "no time named");
}

#[test]
fn capacity_archives_the_least_worth_keeping_and_restore_brings_it_back() {
    use engram_memory::{Retention, Select};
    let dir = tempfile::tempdir().unwrap();
    let memory = open(dir.path());
    let chat = scope(Some("ada"), "long");
    let fact = "My locker combination at the gym is 4417, written down nowhere else.";
    let chatter = ["ok", "sure thing", "haha yes", "right", "mm", "cool", "yep", "nice one"];
    memory.append(&chat, NewTurn { pinned: true, ..turn("user", "Call me Ada, always.") }).unwrap();
    memory.append(&chat, turn("user", fact)).unwrap();
    for (i, text) in chatter.iter().chain(&chatter).enumerate() {
        memory.append(&chat, turn(if i % 2 == 0 { "assistant" } else { "user" }, text)).unwrap();
    }
    memory.catch_up().unwrap();
    let total = 2 + 2 * chatter.len();

    // Down to 6: the pinned turn, the fact (said early, but long) and the
    // latest 3 stay; the short chatter goes.
    let retention = Retention { capacity: 6, half_life_turns: 50.0, keep_recent: 3 };
    let archived = memory.archive_over_capacity(&chat, &retention).unwrap();
    assert_eq!(archived.len(), total - 6, "{archived:?}");
    assert!(!archived.contains(&0) && !archived.contains(&1), "{archived:?}");
    assert!(archived.iter().all(|&o| o < total as u64 - 3), "{archived:?}");
    let (bm25, dense) = memory.index_ids(&chat).unwrap();
    assert_eq!((bm25.len(), dense.len()), (6, 6));
    // Below capacity now: nothing more goes.
    assert!(memory.archive_over_capacity(&chat, &retention).unwrap().is_empty());

    // An archived turn is out of recall but kept verbatim, and counted.
    let victim = archived[0];
    let text = memory.turns(&chat, victim, 1).unwrap().remove(0);
    assert!(text.archived);
    let recalled = memory.recall(&chat, &text.text, 20, None).unwrap().turns;
    assert!(recalled.iter().all(|r| !r.turn.archived), "{recalled:?}");
    assert!(recalled.iter().all(|r| !archived.contains(&r.turn.ordinal)), "{recalled:?}");
    let listed = memory.conversations(chat.tenant.as_ref()).unwrap();
    assert_eq!((listed[0].turns, listed[0].archived), (total as u64, archived.len() as u64));
    assert_eq!(memory.recall(&chat, "locker combination", 1, None).unwrap().turns[0].turn.text, fact);

    // Restore one (pinned: capacity keeps it), then the rest.
    assert_eq!(memory.restore(&chat, &Select::Turns(vec![victim]), true).unwrap(), [victim]);
    let turn = memory.turns(&chat, victim, 1).unwrap().remove(0);
    assert!(!turn.archived && turn.pinned);
    assert!(memory.recall(&chat, &text.text, 20, None).unwrap().turns.iter().any(|r| r.turn.ordinal == victim));
    assert!(!memory.archive_over_capacity(&chat, &retention).unwrap().contains(&victim));
    let rest = memory.restore(&chat, &Select::Archived, false).unwrap();
    assert_eq!(rest.len(), archived.len(), "{rest:?}");
    let (bm25, dense) = memory.index_ids(&chat).unwrap();
    assert_eq!((bm25.len(), dense.len()), (total, total));

    // Explicit archive takes even a pinned turn; unknown ordinals are no-ops.
    assert_eq!(memory.archive(&chat, &[0, 999]).unwrap(), [0]);
    assert_eq!(memory.index_ids(&chat).unwrap().0.len(), total - 1);
    // Capacity 0 keeps everything.
    let off = Retention { capacity: 0, ..retention };
    assert!(memory.archive_over_capacity(&chat, &off).unwrap().is_empty());
    // Unknown conversations are refused.
    let nobody = scope(Some("ada"), "nothing-here");
    assert!(matches!(memory.archive(&nobody, &[0]), Err(MemoryError::NotFound(_))));
    assert!(matches!(memory.restore(&nobody, &Select::Archived, true), Err(MemoryError::NotFound(_))));
}

/// The same engine with its vectors on a Qdrant server
/// (`ENGRAM_TEST_QDRANT_URL`, and `ENGRAM_TEST_QDRANT_API_KEY` when it
/// wants one; skipped, and says so, without): scoped, archived, restored
/// and forgotten there too.
#[test]
fn turns_on_a_qdrant_server_stay_scoped_and_leave_it_when_archived_or_forgotten() {
    let Ok(url) = std::env::var("ENGRAM_TEST_QDRANT_URL") else {
        eprintln!("skipped: this test needs a Qdrant 1.13+ server at ENGRAM_TEST_QDRANT_URL");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let server = engram_index::QdrantOptions {
        url,
        api_key: std::env::var("ENGRAM_TEST_QDRANT_API_KEY").ok(),
        collection_prefix: format!("engram-test-memory-{}-{nanos}", std::process::id()),
        timeout: std::time::Duration::from_secs(30),
    };
    let collection = server.collection(engram_memory::INDEX_NAME, &embedder().name);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    let backend = VectorBackend::Qdrant(server.clone());
    let memory =
        Memory::open(store, &dir.path().join("memory"), embedder(), &backend, RecallOptions::default()).unwrap();
    let (ada, bob) = (scope(Some("ada"), "chat"), scope(Some("bob"), "chat"));
    memory.append(&ada, turn("user", "The spare key is under the blue flowerpot.")).unwrap();
    memory.append(&ada, turn("user", "We leave for the coast on Friday morning.")).unwrap();
    memory.append(&bob, turn("user", "My spare key is with the neighbour, Mrs Okafor.")).unwrap();
    memory.catch_up().unwrap();
    assert_eq!(memory.index_ids(&ada).unwrap().1.len(), 2);

    let recalled = memory.recall(&ada, "where is the spare key?", 5, None).unwrap().turns;
    assert!(recalled[0].turn.text.contains("flowerpot"), "{recalled:?}");
    assert!(recalled.iter().all(|r| !r.turn.text.contains("Okafor")), "{recalled:?}");
    assert_eq!(memory.archive(&ada, &[0]).unwrap(), [0]);
    assert_eq!(memory.index_ids(&ada).unwrap().1, [memory.turns(&ada, 1, 1).unwrap()[0].id]);
    memory.restore(&ada, &engram_memory::Select::Archived, false).unwrap();
    assert_eq!(memory.index_ids(&ada).unwrap().1.len(), 2);
    memory.forget(&Forget::Conversation(ada.clone())).unwrap();
    assert!(memory.index_ids(&ada).unwrap().1.is_empty());
    assert_eq!(memory.index_ids(&bob).unwrap().1.len(), 1);
    drop(memory);
    engram_index::QdrantIndex::drop_collection(&server, &collection).unwrap();
}
