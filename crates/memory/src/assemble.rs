//! The context assembler: for a conversation and a new message, the prompt
//! a model is given — system prompt, compact memory (both levels),
//! recalled earlier turns (in time order, with dates) and the latest turns
//! — never over a token budget counted the way the generator counts, with
//! a report of what went in and what was left out, and why.

use engram_models::{Message, Prompt, Role, TokenCounter};
use serde::{Deserialize, Serialize};

use crate::{Memory, MemoryError, Scope, Turn};

/// Counts a prompt's tokens.
pub trait CountTokens: Send + Sync {
    /// Tokens the generator sees for `messages`.
    fn count(&self, messages: &[Message]) -> Result<usize, MemoryError>;
    /// How it counts (`tokenizer` or `estimate`).
    fn method(&self) -> &'static str;
}

impl CountTokens for TokenCounter {
    fn count(&self, messages: &[Message]) -> Result<usize, MemoryError> {
        Ok(TokenCounter::count(self, &Prompt::Chat(messages.to_vec()))?)
    }

    fn method(&self) -> &'static str {
        "tokenizer"
    }
}

/// For a generator whose tokenizer is not at hand (a remote server): one
/// token per 3 bytes plus 8 per message, which overcounts English.
pub struct Estimate;

impl CountTokens for Estimate {
    fn count(&self, messages: &[Message]) -> Result<usize, MemoryError> {
        Ok(messages.iter().map(|m| m.content.len().div_ceil(3) + 8).sum())
    }

    fn method(&self) -> &'static str {
        "estimate"
    }
}

/// How a prompt is assembled (from `[memory]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOptions {
    /// Most tokens.
    pub budget: usize,
    /// Latest turns carried verbatim.
    pub recent_turns: usize,
    /// Earlier turns recalled.
    pub recall_k: usize,
    /// The system prompt.
    pub system_prompt: String,
}

/// A part of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// The system prompt.
    System,
    /// The new message.
    Message,
    /// The level-2 summary.
    Rollup,
    /// The level-1 summary.
    Summary,
    /// One of the latest turns.
    Recent,
    /// An earlier turn recalled for the message.
    Recalled,
}

/// What one part cost, and why it is in (or out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Part {
    /// Which part.
    pub kind: PartKind,
    /// The turn (its ordinal), for turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u64>,
    /// Tokens it adds to the prompt.
    pub tokens: usize,
    /// Why it is in, or out.
    pub why: String,
}

/// An assembled prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Assembled {
    /// The messages, ready for the generator.
    pub messages: Vec<PromptMessage>,
    /// Their tokens.
    pub tokens: usize,
    /// The budget.
    pub budget: usize,
    /// How tokens were counted (`tokenizer`: the generator's own).
    pub counted_with: String,
    /// What went in, in priority order.
    pub included: Vec<Part>,
    /// What was left out.
    pub left_out: Vec<Part>,
}

/// One message of an assembled prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PromptMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

impl From<&Message> for PromptMessage {
    fn from(message: &Message) -> Self {
        let role = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        Self { role: role.to_owned(), content: message.content.clone() }
    }
}

/// What may go in, before the budget decides.
struct Draft<'a> {
    system: &'a str,
    rollup: Option<String>,
    summary: Option<String>,
    recalled: Vec<Turn>,
    recent: Vec<Turn>,
    message: String,
}

impl Draft<'_> {
    fn messages(&self) -> Vec<Message> {
        let mut system = self.system.to_owned();
        if self.rollup.is_some() || self.summary.is_some() {
            system.push_str("\n\nWhat this conversation has been about:");
            for text in [&self.rollup, &self.summary].into_iter().flatten() {
                system.push_str("\n- ");
                system.push_str(text);
            }
        }
        if !self.recalled.is_empty() {
            let mut recalled = self.recalled.clone();
            recalled.sort_by_key(|t| t.ordinal);
            system.push_str("\n\nEarlier turns that bear on the message:");
            for turn in &recalled {
                system.push_str(&format!("\n[{}] {}: {}", crate::when::date(turn.time_ms), turn.speaker, turn.text));
            }
        }
        let mut messages = vec![Message::new(Role::System, system)];
        let mut recent = self.recent.clone();
        recent.sort_by_key(|t| t.ordinal);
        messages.extend(recent.iter().map(turn_message));
        messages.push(Message::new(Role::User, self.message.clone()));
        messages
    }
}

/// A turn as a chat message: the assistant's own, or a person's (named
/// when it is not `user`).
fn turn_message(turn: &Turn) -> Message {
    match turn.speaker.as_str() {
        "assistant" => Message::new(Role::Assistant, turn.text.clone()),
        "user" => Message::new(Role::User, turn.text.clone()),
        name => Message::new(Role::User, format!("{name}: {}", turn.text)),
    }
}

impl Memory {
    /// The prompt for `message` in `scope`'s conversation (which need not
    /// exist yet), within `options.budget` tokens as `counter` counts them.
    ///
    /// Parts go in by priority — the system prompt and the message (cut
    /// from the front if they alone overflow), the level-2 then level-1
    /// summary, the latest turns newest first, then recalled turns best
    /// first — each only if the whole prompt still fits.
    pub fn assemble(
        &self,
        scope: &Scope,
        message: &str,
        options: &AssembleOptions,
        counter: &dyn CountTokens,
        now_ms: Option<i64>,
    ) -> Result<Assembled, MemoryError> {
        let exists = self.conversation_row(scope)?.is_some();
        let (compact, recent, recalled) = if exists {
            let compact = self.compact(scope)?;
            let newest = self.newest(scope)?.unwrap_or(0);
            let from = (newest + 1).saturating_sub(options.recent_turns as u64);
            let recent =
                if options.recent_turns == 0 { Vec::new() } else { self.turns(scope, from, options.recent_turns)? };
            let recalled = if options.recall_k == 0 {
                Vec::new()
            } else {
                self.recall(scope, message, options.recall_k + recent.len(), now_ms)?
                    .turns
                    .into_iter()
                    .filter(|r| !recent.iter().any(|t| t.ordinal == r.turn.ordinal))
                    .take(options.recall_k)
                    .map(|r| r.turn)
                    .collect()
            };
            (compact, recent, recalled)
        } else {
            Default::default()
        };

        let mut draft = Draft {
            system: &options.system_prompt,
            rollup: None,
            summary: None,
            recalled: Vec::new(),
            recent: Vec::new(),
            message: message.to_owned(),
        };
        let mut included = Vec::new();
        let mut left_out = Vec::new();
        let mut tokens = counter.count(&draft.messages())?;
        let base_why = "always: the system prompt and the message".to_owned();
        if tokens > options.budget {
            // Keep the end of the message (where the question usually is).
            let (mut low, mut high) = (0, message.len());
            while low < high {
                let mid = (low + high) / 2;
                let mut cut = mid;
                while !message.is_char_boundary(cut) {
                    cut += 1;
                }
                draft.message = format!("…{}", &message[cut..]);
                if counter.count(&draft.messages())? <= options.budget { high = mid } else { low = mid + 1 }
            }
            let mut cut = low;
            while !message.is_char_boundary(cut) {
                cut += 1;
            }
            draft.message = if cut >= message.len() { String::new() } else { format!("…{}", &message[cut..]) };
            tokens = counter.count(&draft.messages())?;
            if tokens > options.budget {
                return Err(MemoryError::Invalid(format!(
                    "the system prompt alone takes {tokens} tokens, over the budget of {}",
                    options.budget
                )));
            }
            included.push(Part {
                kind: PartKind::Message,
                turn: None,
                tokens,
                why: format!("{base_why}; the message was cut to its last {} bytes to fit", message.len() - cut),
            });
        } else {
            included.push(Part { kind: PartKind::Message, turn: None, tokens, why: base_why });
        }

        // Each candidate: what it is, and how to put it in the draft.
        let mut try_part = |draft: &mut Draft<'_>,
                            kind: PartKind,
                            turn: Option<u64>,
                            why: String,
                            add: &dyn Fn(&mut Draft<'_>),
                            remove: &dyn Fn(&mut Draft<'_>)|
         -> Result<(), MemoryError> {
            add(draft);
            let with = counter.count(&draft.messages())?;
            if with <= options.budget {
                included.push(Part { kind, turn, tokens: with - tokens, why });
                tokens = with;
            } else {
                remove(draft);
                let needs = with - tokens;
                left_out.push(Part {
                    kind,
                    turn,
                    tokens: needs,
                    why: format!("needs {needs} tokens; {} are left", options.budget - tokens),
                });
            }
            Ok(())
        };
        if let Some(level2) = compact.level2 {
            let why = format!("compact memory, level 2 (turns to {})", level2.last_ordinal);
            let text = level2.text;
            try_part(&mut draft, PartKind::Rollup, None, why, &|d| d.rollup = Some(text.clone()), &|d| {
                d.rollup = None
            })?;
        }
        if let Some(level1) = compact.level1 {
            let why = format!("compact memory, level 1 (turns to {})", level1.last_ordinal);
            let text = level1.text;
            try_part(&mut draft, PartKind::Summary, None, why, &|d| d.summary = Some(text.clone()), &|d| {
                d.summary = None
            })?;
        }
        for turn in recent.into_iter().rev() {
            let ordinal = turn.ordinal;
            let why = "one of the latest turns".to_owned();
            try_part(&mut draft, PartKind::Recent, Some(ordinal), why, &|d| d.recent.push(turn.clone()), &|d| {
                d.recent.retain(|t| t.ordinal != ordinal)
            })?;
        }
        for (rank, turn) in recalled.into_iter().enumerate() {
            let ordinal = turn.ordinal;
            let why = format!("recalled for the message (rank {})", rank + 1);
            try_part(&mut draft, PartKind::Recalled, Some(ordinal), why, &|d| d.recalled.push(turn.clone()), &|d| {
                d.recalled.retain(|t| t.ordinal != ordinal)
            })?;
        }
        let messages = draft.messages();
        Ok(Assembled {
            messages: messages.iter().map(PromptMessage::from).collect(),
            tokens,
            budget: options.budget,
            counted_with: counter.method().to_owned(),
            included,
            left_out,
        })
    }
}
