//! Memory's operations: one request type each, with its defaults, checks,
//! route, audience and (for tools) MCP name. The HTTP routes, the CLI and
//! the MCP tools all send these.

use engram_ops::{Audience, ConversationId, Error, Hints, Method, Operation, TenantId, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::assemble::Assembled;
use crate::{CompactMemory, ConversationInfo, NewTurn, Recollection, Summary};

/// The longest turn accepted, in bytes.
pub const MAX_TURN_BYTES: usize = 64 * 1024;

/// `POST /v1/memory/turns`: appends a turn to a conversation (created with
/// its first turn); answered once the journal has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendTurn {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Who spoke (`user`, `assistant`, a name).
    pub speaker: String,
    /// What was said.
    pub text: String,
    /// When (Unix ms); now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
    /// Labels to filter by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How much it matters, 0 to 1.
    #[serde(default)]
    pub importance: f32,
    /// Never archived by capacity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

impl AppendTurn {
    /// `speaker` saying `text` in `conversation`, now, with the defaults.
    pub fn new(conversation: ConversationId, speaker: impl Into<String>, text: impl Into<String>) -> Self {
        // The turn's defaults are `NewTurn`'s.
        let NewTurn { speaker, text, time_ms, tags, importance, pinned } = NewTurn::new(speaker, text);
        Self { conversation, tenant: None, speaker, text, time_ms, tags, importance, pinned }
    }

    /// The turn to store.
    pub fn turn(&self) -> NewTurn {
        NewTurn {
            speaker: self.speaker.clone(),
            text: self.text.clone(),
            time_ms: self.time_ms,
            tags: self.tags.clone(),
            importance: self.importance,
            pinned: self.pinned,
        }
    }
}

impl Operation for AppendTurn {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/turns";
    type Response = crate::Turn;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        self.turn().problem().map_or(Ok(()), |problem| Err(Error::invalid(problem)))
    }
}

impl Tool for AppendTurn {
    const NAME: &'static str = "memory_append";
    const TITLE: &'static str = "Remember a turn of a conversation";
    const HINTS: Hints = Hints { read_only: false, destructive: false, idempotent: false, open_world: false };
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// `POST /v1/memory/recall`: the turns of a conversation that best answer
/// a query (relevance fused with recency), verbatim, with their place and
/// time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recall {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// What to recall.
    pub query: String,
    /// Turns to return (1-100).
    #[serde(default = "default_k")]
    pub k: usize,
    /// When the question is asked (Unix ms), for the times it names
    /// ("last week"); the present when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<i64>,
}

fn default_k() -> usize {
    5
}

impl Recall {
    /// A recall of `query` in `conversation` with the defaults.
    pub fn new(conversation: ConversationId, query: impl Into<String>) -> Self {
        Self { conversation, tenant: None, query: query.into(), k: default_k(), now_ms: None }
    }
}

impl Operation for Recall {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/recall";
    type Response = Recollection;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.query.trim().is_empty() {
            return Err(Error::invalid("`query` is empty"));
        }
        if !(1..=100).contains(&self.k) {
            return Err(Error::invalid(format!("`k` is {}; it goes from 1 to 100", self.k)));
        }
        if self.now_ms.is_some_and(|t| t < 0) {
            return Err(Error::invalid("`now_ms` is before 1970"));
        }
        Ok(())
    }
}

impl Tool for Recall {
    const NAME: &'static str = "memory_recall";
    const TITLE: &'static str = "Recall turns of a conversation";
    const HINTS: Hints = Hints::READ;
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// `GET /v1/memory/conversations`: the caller's conversations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conversations {
    /// Whose (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

/// What [`Conversations`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationsResponse {
    /// By name.
    pub conversations: Vec<ConversationInfo>,
}

impl Operation for Conversations {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/memory/conversations";
    type Response = ConversationsResponse;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
}

/// `POST /v1/memory/forget`: forgets a conversation, one of its turns, or
/// the turns said in a time range: their text and everything derived from
/// it (index entries, vectors, cached embeddings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetMemory {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Only this turn (its `ordinal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u64>,
    /// Only the turns said in `[from, to)`, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<[i64; 2]>,
}

impl ForgetMemory {
    /// What the engine forgets.
    pub fn target(&self) -> crate::Forget {
        let scope = crate::Scope { tenant: self.tenant.clone(), conversation: self.conversation.clone() };
        match (self.turn, self.time) {
            (Some(ordinal), _) => crate::Forget::Turn(scope, ordinal),
            (None, Some([from, to])) => crate::Forget::Range(scope, from, to),
            (None, None) => crate::Forget::Conversation(scope),
        }
    }
}

/// What a forget did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Forgotten {
    /// Turns forgotten.
    pub turns: u64,
}

impl Operation for ForgetMemory {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/forget";
    type Response = Forgotten;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.turn.is_some() && self.time.is_some() {
            return Err(Error::invalid("give `turn` or `time`, not both"));
        }
        if let Some([from, to]) = self.time
            && from >= to
        {
            return Err(Error::invalid(format!("`time` is [{from}, {to}): it needs from < to")));
        }
        Ok(())
    }
}

impl Tool for ForgetMemory {
    const NAME: &'static str = "memory_forget";
    const TITLE: &'static str = "Forget a conversation, a turn or a time range";
    const HINTS: Hints = Hints { read_only: false, destructive: true, idempotent: true, open_world: false };
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// `POST /v1/memory/forget-tenant`: forgets every conversation of a tenant
/// (or the operator's own). The operator's alone, and never a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetTenant {
    /// The tenant; the operator's own memory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

impl Operation for ForgetTenant {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/forget-tenant";
    type Response = Forgotten;
}

/// `POST /v1/memory/archive`: takes turns of a conversation out of recall,
/// keeping them verbatim (and in its summaries) — the named turns, or the
/// turns of least retention down to a capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMemory {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// These turns (their ordinals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<u64>,
    /// Or: the turns of least retention, until this many are left in recall
    /// (pinned and the latest `memory.recent_turns` stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
}

/// What an archive or restore changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Archived {
    /// The ordinals of the turns it moved, in order.
    pub turns: Vec<u64>,
}

impl Operation for ArchiveMemory {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/archive";
    type Response = Archived;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        match (self.turns.is_empty(), self.capacity) {
            (true, None) => Err(Error::invalid("name the `turns` to archive, or a `capacity` to archive down to")),
            (false, Some(_)) => Err(Error::invalid("give `turns` or `capacity`, not both")),
            _ => Ok(()),
        }
    }
}

/// `POST /v1/memory/restore`: brings archived turns of a conversation back
/// into recall — the named ones, or all — pinned unless `pin` is false (so
/// capacity does not archive them again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreMemory {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// These turns (their ordinals); every archived turn when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<u64>,
    /// Pin what is restored.
    #[serde(default = "yes")]
    pub pin: bool,
}

fn yes() -> bool {
    true
}

impl RestoreMemory {
    /// Which turns.
    pub fn select(&self) -> crate::Select {
        if self.turns.is_empty() { crate::Select::Archived } else { crate::Select::Turns(self.turns.clone()) }
    }
}

impl Operation for RestoreMemory {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/restore";
    type Response = Archived;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
}

/// `POST /v1/memory/summary`: a conversation's compact memory (its latest
/// level-1 and level-2 summaries), and on request every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySummary {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Also every earlier version, with the turns each covered.
    #[serde(default)]
    pub history: bool,
}

/// What [`MemorySummary`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SummaryResponse {
    /// The latest summaries.
    #[serde(flatten)]
    pub compact: CompactMemory,
    /// Every version, oldest first (with `history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Summary>,
}

impl Operation for MemorySummary {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/summary";
    type Response = SummaryResponse;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
}

impl Tool for MemorySummary {
    const NAME: &'static str = "memory_summary";
    const TITLE: &'static str = "Read a conversation's compact memory";
    const HINTS: Hints = Hints::READ;
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// `POST /v1/memory/assemble`: the prompt for a new message in a
/// conversation — system prompt, compact memory, recalled and latest turns
/// — within a token budget, with what went in and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assemble {
    /// The conversation (it need not exist yet).
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The new message.
    pub message: String,
    /// Most tokens; `memory.budget_tokens` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<usize>,
    /// When the message is sent (Unix ms), for the times it names; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<i64>,
}

impl Operation for Assemble {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/assemble";
    type Response = Assembled;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.message.trim().is_empty() {
            return Err(Error::invalid("`message` is empty"));
        }
        if self.message.len() > MAX_TURN_BYTES {
            return Err(Error::invalid(format!(
                "the message is {} bytes; at most {MAX_TURN_BYTES}",
                self.message.len()
            )));
        }
        let range = engram_config::BUDGET_TOKENS;
        if self.budget.is_some_and(|b| !range.contains(&b)) {
            return Err(Error::invalid(format!("`budget` goes from {} to {} tokens", range.start(), range.end())));
        }
        if self.now_ms.is_some_and(|t| t < 0) {
            return Err(Error::invalid("`now_ms` is before 1970"));
        }
        Ok(())
    }
}

/// `POST /v1/memory/export`: a conversation's whole memory — every turn
/// verbatim and every summary version — as JSON a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportMemory {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose conversation (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

/// What [`ExportMemory`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationExport {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The latest summaries.
    pub compact: CompactMemory,
    /// Every turn, oldest first.
    pub turns: Vec<crate::Turn>,
    /// Every summary version, oldest first.
    pub summaries: Vec<Summary>,
}

impl Operation for ExportMemory {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/memory/export";
    type Response = ConversationExport;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> ConversationId {
        ConversationId::new("chat").unwrap()
    }

    fn refused(result: Result<(), Error>, needle: &str) {
        match result {
            Err(err) => assert!(err.to_string().contains(needle), "{err} lacks {needle}"),
            Ok(()) => panic!("accepted; expected an error about {needle}"),
        }
    }

    #[test]
    fn every_operation_refuses_bad_input_by_name() {
        let mut append = AppendTurn::new(chat(), "user", " ");
        refused(append.validate(), "`text` is empty");
        append.text = "x".repeat(MAX_TURN_BYTES + 1);
        refused(append.validate(), "at most");
        append.text = "hi".into();
        append.time_ms = Some(-1);
        refused(append.validate(), "before 1970");

        let mut recall = Recall::new(chat(), "where?");
        recall.now_ms = Some(-5);
        refused(recall.validate(), "`now_ms`");
        recall.now_ms = None;
        recall.k = 0;
        refused(recall.validate(), "`k` is 0");

        let assemble = |message: &str, budget: Option<usize>, now_ms: Option<i64>| Assemble {
            conversation: chat(),
            tenant: None,
            message: message.into(),
            budget,
            now_ms,
        };
        refused(assemble("", None, None).validate(), "`message` is empty");
        refused(assemble(&"x".repeat(MAX_TURN_BYTES + 1), None, None).validate(), "at most");
        refused(assemble("hi", Some(10), None).validate(), "`budget` goes from 256");
        refused(assemble("hi", None, Some(-1)).validate(), "`now_ms`");
        assert!(assemble("hi", Some(300), None).validate().is_ok());

        let forget =
            |turn: Option<u64>, time: Option<[i64; 2]>| ForgetMemory { conversation: chat(), tenant: None, turn, time };
        refused(forget(Some(1), Some([0, 1])).validate(), "not both");
        refused(forget(None, Some([5, 5])).validate(), "from < to");

        let archive = |turns: Vec<u64>, capacity: Option<usize>| ArchiveMemory {
            conversation: chat(),
            tenant: None,
            turns,
            capacity,
        };
        refused(archive(Vec::new(), None).validate(), "name the `turns`");
        refused(archive(vec![1], Some(3)).validate(), "not both");
        assert!(archive(vec![1], None).validate().is_ok() && archive(Vec::new(), Some(3)).validate().is_ok());
    }

    #[test]
    fn restore_pins_by_default_and_an_empty_list_means_every_archived_turn() {
        let restore: RestoreMemory = serde_json::from_value(serde_json::json!({"conversation": "chat"})).unwrap();
        assert!(restore.pin);
        assert_eq!(restore.select(), crate::Select::Archived);
        let some: RestoreMemory =
            serde_json::from_value(serde_json::json!({"conversation": "chat", "turns": [2, 3], "pin": false})).unwrap();
        assert_eq!((some.select(), some.pin), (crate::Select::Turns(vec![2, 3]), false));
    }
}
