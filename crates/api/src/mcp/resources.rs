//! Resources (collections, their certificates, plugin manifests, the
//! experience library and its insights, each conversation's compact
//! memory) and
//! prompts (a question wrapped with certified evidence), each read through
//! the same operations and handlers as the HTTP routes.

use std::fmt::Write as _;

use engram_experience::Status;
use engram_experience::ops::{ListInsights, ShowInsight};
use engram_memory::ops::{Conversations, MemorySummary};
use engram_ops::{Caller, ConversationId, Error, Operation};
use engram_rag::ops::{Certificate, Certificates, Collections, Search, SearchResponse};
use rmcp::model::{
    GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, Role,
};
use serde::Serialize;

use crate::app::AppState;
use crate::{experience, memory, rag};

const COLLECTIONS: &str = "engram://collections";
const CERTIFICATES: &str = "engram://certificates/";
const PLUGINS: &str = "engram://plugins/";
/// Each conversation's compact memory, of the caller's own conversations.
pub(crate) const MEMORY: &str = "engram://memory/";
/// The experience library's active insights.
const INSIGHTS: &str = "engram://insights";
/// One insight with its history.
const INSIGHT: &str = "engram://insights/";
const JSON: &str = "application/json";
/// The prompt that wraps a question with certified evidence.
pub(crate) const CITE_EVIDENCE: &str = "cite_evidence";
/// The certificate template.
pub(crate) const CERTIFICATE_TEMPLATE: &str = "engram://certificates/{id}";
/// The plugin template.
pub(crate) const PLUGIN_TEMPLATE: &str = "engram://plugins/{id}";
/// The insight template.
pub(crate) const INSIGHT_TEMPLATE: &str = "engram://insights/{id}";
/// The compact-memory template.
pub(crate) const MEMORY_TEMPLATE: &str = "engram://memory/{conversation}";

/// The conversation a compact-memory URI names.
pub(crate) fn memory_conversation(uri: &str) -> Option<Result<ConversationId, Error>> {
    let name = uri.strip_prefix(MEMORY)?;
    Some(ConversationId::new(name).map_err(|err| Error::invalid(format!("{uri}: {err}"))))
}

/// Runs operation `O` for `caller` through `handler`.
async fn run<O: Operation, Fut>(
    state: &AppState,
    caller: &Caller,
    mut request: O,
    handler: impl FnOnce(AppState, O) -> Fut,
) -> Result<O::Response, Error>
where
    Fut: std::future::Future<Output = Result<O::Response, Error>>,
{
    request.authorize(caller)?;
    handler(state.clone(), request).await
}

/// Every concrete resource: the collections list, each certificate, each
/// plugin, the compact memory of each of the caller's conversations.
pub(crate) async fn list(state: &AppState, caller: &Caller) -> Result<Vec<Resource>, Error> {
    let mut resources = vec![
        Resource::new(COLLECTIONS, "collections")
            .with_title("Collections")
            .with_description("Every collection with its documents, chunks and change count")
            .with_mime_type(JSON),
    ];
    let certificates = if Certificates::AUDIENCE.admits(caller) {
        run(state, caller, Certificates::default(), rag::certificates).await?.certificates
    } else {
        Vec::new()
    };
    for status in certificates {
        let cert = &status.certificate;
        let claim = if status.stale { "stale".to_owned() } else { format!("1 - {} coverage", cert.calibration.alpha) };
        resources.push(
            Resource::new(format!("{CERTIFICATES}{}", cert.id), cert.id.clone())
                .with_description(format!("Coverage certificate of collection `{}` ({claim})", cert.collection))
                .with_mime_type(JSON),
        );
    }
    if ListInsights::AUDIENCE.admits(caller) {
        resources.push(
            Resource::new(INSIGHTS, "insights")
                .with_title("Experience library")
                .with_description(
                    "The active insights {taxonomy, condition, explanation, example} with their provenance and \
                     counters; each one with its history at engram://insights/{id}",
                )
                .with_mime_type(JSON),
        );
    }
    for conversation in run(state, caller, Conversations::default(), memory::conversations).await?.conversations {
        let name = &conversation.conversation;
        resources.push(
            Resource::new(format!("{MEMORY}{name}"), format!("memory/{name}"))
                .with_description(format!(
                    "Compact memory of conversation `{name}` ({} turns): its running summary and roll-up; \
                     subscribe to hear when they change",
                    conversation.turns
                ))
                .with_mime_type(JSON),
        );
    }
    // Manifests carry the operator's grants: the operator's to read.
    if let (Some(host), Caller::Operator) = (state.plugins(), caller) {
        for plugin in host.plugins() {
            resources.push(
                Resource::new(format!("{PLUGINS}{}", plugin.id), plugin.id.clone())
                    .with_description(format!("Plugin `{}`: its tools, capabilities and grants", plugin.id))
                    .with_mime_type(JSON),
            );
        }
    }
    Ok(resources)
}

/// The parameterized resources.
pub(crate) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(CERTIFICATE_TEMPLATE, "certificate")
            .with_description("A coverage certificate and whether it still holds")
            .with_mime_type(JSON),
        ResourceTemplate::new(PLUGIN_TEMPLATE, "plugin")
            .with_description("A plugin's manifest: tools with their schemas, capabilities requested and granted")
            .with_mime_type(JSON),
        ResourceTemplate::new(INSIGHT_TEMPLATE, "insight")
            .with_description("An insight of the experience library and every event that made it")
            .with_mime_type(JSON),
        ResourceTemplate::new(MEMORY_TEMPLATE, "memory")
            .with_description("A conversation's compact memory (running summary and roll-up); subscribable")
            .with_mime_type(JSON),
    ]
}

/// The names `caller` may complete an argument with: `collection` names,
/// `certificate` ids, `plugin` ids, `insight` ids or `conversation` names (nothing when
/// they cannot be read).
pub(crate) async fn names(state: &AppState, caller: &Caller, kind: &str) -> Vec<String> {
    match kind {
        "collection" => run(state, caller, Collections::default(), rag::collections)
            .await
            .map(|listed| listed.collections.into_iter().map(|c| c.name.to_string()).collect())
            .unwrap_or_default(),
        "certificate" => run(state, caller, Certificates::default(), rag::certificates)
            .await
            .map(|listed| listed.certificates.into_iter().map(|s| s.certificate.id).collect())
            .unwrap_or_default(),
        "plugin" => state.plugins().map(|host| host.plugins().into_iter().map(|p| p.id).collect()).unwrap_or_default(),
        "insight" => run(state, caller, ListInsights::default(), experience::list)
            .await
            .map(|listed| listed.insights.into_iter().map(|insight| insight.id).collect())
            .unwrap_or_default(),
        "conversation" => run(state, caller, Conversations::default(), memory::conversations)
            .await
            .map(|listed| listed.conversations.into_iter().map(|c| c.conversation).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads resource `uri`.
pub(crate) async fn read(state: &AppState, caller: &Caller, uri: &str) -> Result<ReadResourceResult, Error> {
    let text = if uri == COLLECTIONS {
        json(&run(state, caller, Collections::default(), rag::collections).await?)?
    } else if let Some(id) = uri.strip_prefix(CERTIFICATES) {
        json(&run(state, caller, Certificate { id: id.to_owned() }, rag::certificate).await?)?
    } else if let Some(id) = uri.strip_prefix(PLUGINS) {
        if *caller != Caller::Operator {
            return Err(Error::forbidden("plugin manifests (with their grants) are for the operator"));
        }
        let host = state.plugins().ok_or_else(|| Error::unavailable("this daemon runs no plugin host"))?;
        let plugin = host
            .plugins()
            .into_iter()
            .find(|plugin| plugin.id == id)
            .ok_or_else(|| Error::not_found(format!("no plugin `{id}`")))?;
        let tools: Vec<_> = host.list_tools().into_iter().filter(|tool| tool.plugin == id).collect();
        json(&serde_json::json!({ "plugin": plugin, "tools": tools }))?
    } else if uri == INSIGHTS {
        let request = ListInsights { status: Some(Status::Active), taxonomy: None };
        json(&run(state, caller, request, experience::list).await?)?
    } else if let Some(id) = uri.strip_prefix(INSIGHT) {
        json(&run(state, caller, ShowInsight { id: id.to_owned() }, experience::show).await?)?
    } else if let Some(conversation) = memory_conversation(uri) {
        let request = MemorySummary { conversation: conversation?, tenant: None, history: false };
        json(&run(state, caller, request, memory::summary).await?)?
    } else {
        return Err(Error::not_found(format!("no resource {uri}")));
    };
    Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri).with_mime_type(JSON)]))
}

fn json(value: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(Error::internal)
}

/// The prompts.
pub(crate) fn prompts() -> Vec<Prompt> {
    let arguments = vec![
        PromptArgument::new("question").with_description("The question to answer").with_required(true),
        PromptArgument::new("collection")
            .with_description("A calibrated collection to take evidence from")
            .with_required(true),
        PromptArgument::new("alpha")
            .with_description(
                "Miscoverage level in (0, 1); the evidence is in the set with probability >= 1 - alpha (default 0.1)",
            )
            .with_required(false),
    ];
    vec![
        Prompt::new(
            CITE_EVIDENCE,
            Some("A question wrapped with Engram's certified evidence from a collection, to answer with citations"),
            Some(arguments),
        )
        .with_title("Answer with certified evidence"),
    ]
}

/// Renders prompt `name` with `arguments`.
pub(crate) async fn prompt(
    state: &AppState,
    caller: &Caller,
    name: &str,
    arguments: JsonObject,
) -> Result<GetPromptResult, Error> {
    if name != CITE_EVIDENCE {
        return Err(Error::invalid(format!("no prompt named `{name}`")));
    }
    let text = |key: &str| arguments.get(key).and_then(|v| v.as_str().map(str::to_owned).or(Some(v.to_string())));
    let question = text("question").ok_or_else(|| Error::invalid("`question` is required"))?;
    let collection = text("collection").ok_or_else(|| Error::invalid("`collection` is required"))?;
    let alpha = match text("alpha") {
        Some(alpha) => {
            alpha.trim().parse::<f64>().map_err(|_| Error::invalid(format!("`alpha` is not a number: {alpha}")))?
        }
        None => 0.1,
    };
    let mut search = Search::new(question.clone());
    search.collection = Some(collection.parse().map_err(|err| Error::invalid(format!("`collection`: {err}")))?);
    search.alpha = Some(alpha);
    let SearchResponse::Certified(set) = run(state, caller, search, rag::search).await? else {
        return Err(Error::internal("a search with alpha answered without a certificate"));
    };
    let mut body = String::new();
    let _ =
        writeln!(body, "Answer the question using only the evidence below, and cite each claim as [n] with its path.");
    let _ = writeln!(body, "\nQuestion: {question}\n");
    match set.coverage_guarantee {
        Some(coverage) => {
            let _ = writeln!(
                body,
                "Evidence: certificate {} guarantees that, with probability at least {coverage}, a passage holding the \
                 evidence is among these {} (for {}).",
                set.certificate,
                set.hits.len(),
                set.population
            );
        }
        None => {
            let why: Vec<&str> = set.no_guarantee.iter().map(|reason| reason.describe()).collect();
            let _ = writeln!(
                body,
                "Evidence (no coverage guarantee: {}; certificate {}, for {}):",
                why.join("; "),
                set.certificate,
                set.population
            );
        }
    }
    for (n, hit) in set.hits.iter().enumerate() {
        let _ =
            writeln!(body, "\n[{}] {} (characters {}-{})\n{}", n + 1, hit.path, hit.chars[0], hit.chars[1], hit.text);
    }
    if set.hits.is_empty() {
        let _ = writeln!(
            body,
            "\n(No passage passed the certificate's threshold: say that the collection does not answer it.)"
        );
    }
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, body)])
        .with_description(format!("{question} — with certified evidence from `{collection}`")))
}
