//! A plugin granted `memory` recalls from the caller's own conversation:
//! the real hostile fixture (built from `plugins/` by
//! `scripts/build-plugins`), the real plugin host and a real memory
//! (SQLite journal, tantivy and qdrant-edge indexes, all-MiniLM-L6-v2).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use engram_memory::{Memory, NewTurn, RecallOptions, Scope};
use engram_ops::{ConversationId, TenantId};
use engram_plugin_host::grants::Grants;
use engram_plugin_host::{CallError, PluginHost, PrivateAddresses};
use engram_services::memory::PluginRecall;
use engram_store::{Store, StoreOptions};
use serde_json::json;

include!("../../models/tests/common/mod.rs");

#[test]
fn a_plugin_recalls_only_its_callers_conversation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = tempfile::tempdir().unwrap();
    let installed = state.path().join("plugins");
    let status = std::process::Command::new(root.join("scripts/build-plugins"))
        .arg("--with-fixtures")
        .arg(&installed)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/build-plugins");
    assert!(status.success(), "scripts/build-plugins failed");
    for other in std::fs::read_dir(&installed).unwrap() {
        let other = other.unwrap().path();
        if other.file_name().is_some_and(|name| name != "hostile") {
            std::fs::remove_dir_all(other).unwrap();
        }
    }

    let store = Store::open(&state.path().join("journal.sqlite3"), &StoreOptions::default()).unwrap();
    let pool = engram_models::inference_pool(2, "test-embed").unwrap();
    let embedder = engram_models::Embedder::load(&minilm(), &engram_models::Device::Cpu, pool, 16).unwrap();
    let memory = Memory::open(
        store,
        &state.path().join("memory"),
        Arc::new(embedder),
        &engram_index::VectorBackend::Edge,
        RecallOptions::default(),
    )
    .unwrap();
    let scope = |tenant: &str, conversation: &str| Scope {
        tenant: Some(TenantId::new(tenant).unwrap()),
        conversation: ConversationId::new(conversation).unwrap(),
    };
    memory.append(&scope("acme", "trip"), NewTurn::new("user", "Our team offsite is in Porto in June.")).unwrap();
    memory.append(&scope("acme", "trip"), NewTurn::new("assistant", "Porto in June: I will look at hotels.")).unwrap();
    memory.append(&scope("bob", "trip"), NewTurn::new("user", "My offsite is in Oslo, keep it secret.")).unwrap();
    memory.append(&scope("acme", "other"), NewTurn::new("user", "The offsite budget is 9000 euros.")).unwrap();

    let host = PluginHost::with_grants(None, Grants::open(state.path().join("grants.toml")).unwrap()).unwrap();
    host.set_recall(Arc::new(PluginRecall(Arc::new(memory))));
    assert!(host.load_dir(&installed).failed.is_empty());
    let data = state.path().join("data");
    std::fs::create_dir(&data).unwrap();
    host.approve(&installed.join("hostile"), &BTreeMap::from([("data".to_owned(), data)]), PrivateAddresses::Refused)
        .unwrap();
    assert!(host.reload(&installed).failed.is_empty());

    let call = |tenant: Option<&str>, conversation: Option<&str>| {
        let scope = engram_plugin_host::Scope {
            tenant: tenant.map(str::to_owned),
            conversation: conversation.map(str::to_owned),
        };
        host.call_tool_blocking_in(&scope, "hostile.recall", &json!({"query": "where is the offsite?"}))
    };
    let hits = call(Some("acme"), Some("trip")).unwrap();
    let texts: Vec<&str> = hits.as_array().unwrap().iter().map(|h| h["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.starts_with("user (") && t.ends_with("Our team offsite is in Porto in June.")));
    assert!(texts.iter().all(|t| !t.contains("Oslo") && !t.contains("9000")), "{texts:?}");
    assert!(hits.as_array().unwrap().iter().all(|h| (0.0..=1.0).contains(&h["score"].as_f64().unwrap())));
    // Another tenant's conversation of the same name is another memory.
    let hits = call(Some("bob"), Some("trip")).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert!(hits[0]["text"].as_str().unwrap().contains("Oslo"));
    // A conversation with no turns remembers nothing; no conversation is an error.
    assert_eq!(call(Some("carol"), Some("trip")).unwrap(), json!([]));
    match call(Some("acme"), None) {
        Err(CallError::ToolFailed { message, .. }) => assert!(message.contains("needs a conversation"), "{message}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}
