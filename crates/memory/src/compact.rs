//! Compact memory: each conversation's running summaries, kept by an LLM
//! behind the writes. Level 1 is one sentence about the whole
//! conversation, rewritten with every batch of new turns; level 2 rolls the
//! recent level-1 summaries up every `rollup_every` turns. Every version is
//! kept with the turns it covers, and forgetting a turn deletes every
//! version that covered it (the summarizer then writes them again without
//! it).
//!
//! The engine prepares a [`SummaryJob`] (the prompt and what it covers);
//! whoever owns the LLM runs it and hands the text back to
//! [`Memory::store_summary`], which refuses it if a forget happened in
//! between.

use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Entity, Op};
use serde::{Deserialize, Serialize};

use crate::{Memory, MemoryError, Scope};

/// Most turns one level-1 job folds in (a conversation far behind catches
/// up in several jobs).
pub const MAX_TURNS_PER_JOB: usize = 12;
/// Most bytes of turn text one level-1 job folds in.
pub const MAX_BYTES_PER_JOB: usize = 6_000;
/// Most level-1 summaries a level-2 job reads.
pub const MAX_SUMMARIES_PER_ROLLUP: usize = 8;

/// The prompts, from `[memory]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryPrompts {
    /// Level 1, with `{summary}` and `{turns}`.
    pub summary: String,
    /// Level 2, with `{summary}` and `{summaries}`.
    pub rollup: String,
    /// A level-2 summary every this many turns.
    pub rollup_every: usize,
}

/// One version of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// 1 (the running sentence) or 2 (the roll-up).
    pub level: u8,
    /// The summary.
    pub text: String,
    /// The first turn it covers (its ordinal).
    pub first_ordinal: u64,
    /// The last turn it covers.
    pub last_ordinal: u64,
    /// The model that wrote it.
    pub model: String,
    /// When it was written (Unix ms).
    pub created_at_ms: i64,
}

/// A conversation's compact memory: the latest summary of each level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompactMemory {
    /// The running one-sentence summary.
    pub level1: Option<Summary>,
    /// The roll-up.
    pub level2: Option<Summary>,
    /// The turns no level-1 summary covers yet (the summarizer is behind).
    pub pending_turns: u64,
}

/// A summary to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryJob {
    /// Whose.
    pub scope: Scope,
    /// Which level.
    pub level: u8,
    /// The prompt for the LLM.
    pub prompt: String,
    /// The turns the result covers.
    pub first_ordinal: u64,
    /// The last turn it covers.
    pub last_ordinal: u64,
    /// The conversation's forget epoch when the job was read.
    epoch: i64,
    conversation: i64,
}

impl Memory {
    /// The latest summaries of `scope`.
    pub fn compact(&self, scope: &Scope) -> Result<CompactMemory, MemoryError> {
        let Some((conversation, _)) = self.conversation_row(scope)? else {
            return Err(self.no_conversation(scope));
        };
        let level1 = self.latest_summary(conversation, 1)?;
        let level2 = self.latest_summary(conversation, 2)?;
        let covered = level1.as_ref().map_or(-1, |s| s.last_ordinal as i64);
        let pending: i64 = self.store.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM turns WHERE conversation = ?1 AND ordinal > ?2",
                params![conversation, covered],
                |row| row.get(0),
            )
        })?;
        Ok(CompactMemory { level1, level2, pending_turns: pending as u64 })
    }

    /// Every version of `scope`'s summaries, oldest first.
    pub fn summary_history(&self, scope: &Scope) -> Result<Vec<Summary>, MemoryError> {
        let Some((conversation, _)) = self.conversation_row(scope)? else {
            return Err(self.no_conversation(scope));
        };
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{SUMMARY} WHERE conversation = ?1 ORDER BY id"))?;
            let rows = stmt.query_map(params![conversation], summary_row)?;
            rows.collect()
        })?)
    }

    /// The conversations whose level-1 summary lags their turns (or whose
    /// roll-up is due), oldest lag first.
    pub fn behind(&self) -> Result<Vec<Scope>, MemoryError> {
        let rows: Vec<(String, String)> = self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.tenant, c.name FROM conversations c \
                 WHERE (SELECT max(ordinal) FROM turns t WHERE t.conversation = c.id) > \
                       coalesce((SELECT max(last_ordinal) FROM summaries s WHERE s.conversation = c.id AND s.level = 1), -1) \
                 ORDER BY c.id",
            )?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(tenant, name)| {
                let invalid = |err: engram_ops::InvalidId| MemoryError::Invalid(err.to_string());
                Ok(Scope {
                    tenant: if tenant.is_empty() {
                        None
                    } else {
                        Some(engram_ops::TenantId::new(tenant).map_err(invalid)?)
                    },
                    conversation: engram_ops::ConversationId::new(name).map_err(invalid)?,
                })
            })
            .collect()
    }

    /// The next summary `scope` needs, if any: a level-2 roll-up when one
    /// is due, else a level-1 rewrite folding in the turns since the last.
    pub fn next_summary(&self, scope: &Scope, prompts: &SummaryPrompts) -> Result<Option<SummaryJob>, MemoryError> {
        let Some((conversation, epoch)) = self.conversation_row(scope)? else {
            return Ok(None);
        };
        let level1 = self.latest_summary(conversation, 1)?;
        let level2 = self.latest_summary(conversation, 2)?;
        let job = |level, prompt, first_ordinal, last_ordinal| SummaryJob {
            scope: scope.clone(),
            level,
            prompt,
            first_ordinal,
            last_ordinal,
            epoch,
            conversation,
        };
        // A roll-up is due once level 1 covers `rollup_every` turns past the last one.
        if let Some(level1) = &level1 {
            let rolled = level2.as_ref().map_or(-1, |s| s.last_ordinal as i64);
            if level1.last_ordinal as i64 - rolled >= prompts.rollup_every as i64 {
                let since: Vec<Summary> = self.store.read(|conn| {
                    let mut stmt = conn.prepare_cached(&format!(
                        "{SUMMARY} WHERE conversation = ?1 AND level = 1 AND last_ordinal > ?2 ORDER BY last_ordinal"
                    ))?;
                    let rows = stmt.query_map(params![conversation, rolled], summary_row)?;
                    rows.collect()
                })?;
                let summaries = spread(&since, MAX_SUMMARIES_PER_ROLLUP)
                    .iter()
                    .map(|s| format!("- (to turn {}) {}", s.last_ordinal, s.text))
                    .collect::<Vec<_>>()
                    .join("\n");
                let previous = level2.as_ref().map_or("(none yet)", |s| s.text.as_str());
                let prompt = prompts.rollup.replace("{summary}", previous).replace("{summaries}", &summaries);
                return Ok(Some(job(2, prompt, 0, level1.last_ordinal)));
            }
        }
        let covered = level1.as_ref().map_or(-1, |s| s.last_ordinal as i64);
        let turns = self.turns(scope, (covered + 1) as u64, MAX_TURNS_PER_JOB)?;
        if turns.is_empty() {
            return Ok(None);
        }
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut last = turns[0].ordinal;
        for turn in &turns {
            let line = format!("{}: {}", turn.speaker, turn.text);
            if !lines.is_empty() && bytes + line.len() > MAX_BYTES_PER_JOB {
                break;
            }
            // One turn longer than a job holds is cut (the summary is one sentence).
            let line = if line.len() > MAX_BYTES_PER_JOB {
                let mut end = MAX_BYTES_PER_JOB;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &line[..end])
            } else {
                line
            };
            bytes += line.len();
            lines.push(line);
            last = turn.ordinal;
        }
        let previous = level1.as_ref().map_or("(the conversation has just started)", |s| s.text.as_str());
        let prompt = prompts.summary.replace("{summary}", previous).replace("{turns}", &lines.join("\n"));
        Ok(Some(job(1, prompt, 0, last)))
    }

    /// Stores what the LLM wrote for `job`. Answers `false` (and stores
    /// nothing) when the conversation was forgotten from since the job was
    /// read: its prompt may quote forgotten turns.
    pub fn store_summary(&self, job: &SummaryJob, text: &str, model: &str) -> Result<bool, MemoryError> {
        let text = clean_summary(text);
        if text.is_empty() {
            return Err(MemoryError::Invalid("the model wrote an empty summary".into()));
        }
        self.store.write(|tx| {
            let sql = |source| self.sql_error(source);
            let epoch: Option<i64> = tx
                .sql()
                .query_row("SELECT epoch FROM conversations WHERE id = ?1", params![job.conversation], |row| row.get(0))
                .optional()
                .map_err(sql)?;
            if epoch != Some(job.epoch) {
                return Ok(false);
            }
            let now = tx.at_ms();
            tx.sql()
                .execute(
                    "INSERT INTO summaries (conversation, level, text, first_ordinal, last_ordinal, model, created_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        job.conversation,
                        job.level,
                        text,
                        job.first_ordinal as i64,
                        job.last_ordinal as i64,
                        model,
                        now
                    ],
                )
                .map_err(sql)?;
            let id = tx.sql().last_insert_rowid();
            tx.record(Entity::Summary, &id.to_string(), Op::Upsert)?;
            Ok(true)
        })
    }

    fn latest_summary(&self, conversation: i64, level: u8) -> Result<Option<Summary>, MemoryError> {
        Ok(self.store.read(|conn| {
            conn.query_row(
                &format!(
                    "{SUMMARY} WHERE conversation = ?1 AND level = ?2 ORDER BY last_ordinal DESC, id DESC LIMIT 1"
                ),
                params![conversation, level],
                summary_row,
            )
            .optional()
        })?)
    }
}

/// The columns [`summary_row`] reads.
const SUMMARY: &str = "SELECT level, text, first_ordinal, last_ordinal, model, created_at_ms FROM summaries";

fn summary_row(row: &engram_store::rusqlite::Row<'_>) -> engram_store::rusqlite::Result<Summary> {
    Ok(Summary {
        level: row.get(0)?,
        text: row.get(1)?,
        first_ordinal: row.get::<_, i64>(2)? as u64,
        last_ordinal: row.get::<_, i64>(3)? as u64,
        model: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

/// At most `n` of `items`, evenly spread and always with the last.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[(i + 1) * items.len() / n - 1].clone()).collect()
}

/// A model's summary without what small models add around it: a label,
/// quotes, anything after the first paragraph.
fn clean_summary(text: &str) -> String {
    let text = text.trim();
    let first = text.split("\n\n").next().unwrap_or(text).trim();
    let unlabelled = ["Summary:", "Updated summary:", "New summary:", "Rewritten summary:"]
        .iter()
        .find_map(|label| first.strip_prefix(label))
        .unwrap_or(first)
        .trim();
    unlabelled.trim_matches('"').trim().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keeps_the_last_and_spaces_the_rest() {
        assert_eq!(spread(&[1, 2, 3], 8), [1, 2, 3]);
        assert_eq!(spread(&(1..=10).collect::<Vec<_>>(), 3), [3, 6, 10]);
    }

    #[test]
    fn summaries_lose_their_labels_and_quotes() {
        assert_eq!(clean_summary("Summary: \"Ada plans a trip.\"\n\nNote: more"), "Ada plans a trip.");
        assert_eq!(clean_summary("  Ada and Bob talk\nabout Lisbon. "), "Ada and Bob talk about Lisbon.");
    }
}
