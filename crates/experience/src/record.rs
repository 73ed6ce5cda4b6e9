//! What the library was asked and what came of it: each lookup of
//! insights for a task (the candidates it weighed, the ones it chose) and
//! each outcome reported for one. Each is written in one transaction with
//! the counter events it implies (`retrieved` for a lookup; `helped` or
//! `hurt` for an outcome), so the counters never disagree with the record.

use engram_store::rusqlite::{self, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Change, Counters, Experience, ExperienceError, check};

/// Who writes the counter events of lookups.
const COUNTER_EDITOR: &str = "engram";

/// An insight a lookup weighed, and its score there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Weighed {
    /// The insight.
    pub id: String,
    /// Its fused relevance to the task.
    pub score: f64,
}

/// A lookup to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRetrieval<'a> {
    /// Whose (`""`: the operator's).
    pub tenant: &'a str,
    /// The caller's name for the task (`""` for none).
    pub task_id: &'a str,
    /// The task's text.
    pub task: &'a str,
    /// What it weighed, best first.
    pub candidates: &'a [Weighed],
    /// What it put into the prompt, in order.
    pub chosen: &'a [String],
    /// Whether the LLM's applicability check chose them.
    pub checked: bool,
}

/// A recorded lookup and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Retrieval {
    /// Its id (what feedback names).
    pub id: u64,
    /// Whose (`""`: the operator's).
    pub tenant: String,
    /// The caller's name for the task.
    pub task_id: String,
    /// The task's text.
    pub task: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// What it weighed, best first.
    pub candidates: Vec<Weighed>,
    /// What it put into the prompt.
    pub chosen: Vec<String>,
    /// Whether the LLM's applicability check chose them.
    pub checked: bool,
    /// The outcomes reported for it, oldest first.
    pub outcomes: Vec<Outcome>,
}

/// An outcome reported for a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// Its id.
    pub id: u64,
    /// The lookup it judges.
    pub retrieval: u64,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// Whether the task passed.
    pub passed: bool,
    /// Who judged: a verifier (`lp.solve`) or a client.
    pub judge: String,
    /// What the judge said (a diagnosis, the verifier's output).
    pub detail: String,
}

impl Experience {
    /// Records a lookup, and a `retrieved` count for each insight it chose;
    /// returns its id.
    pub fn record_retrieval(&self, new: &NewRetrieval<'_>) -> Result<u64, ExperienceError> {
        let candidates = to_json(new.candidates)?;
        let chosen = to_json(new.chosen)?;
        let counts = counted(new.chosen, Counters { retrieved: 1, ..Counters::default() });
        self.store.write(|tx| {
            tx.sql()
                .execute(
                    "INSERT INTO insight_retrievals (tenant, task_id, task, at_ms, candidates, chosen, checked) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![new.tenant, new.task_id, new.task, tx.at_ms(), candidates, chosen, new.checked],
                )
                .map_err(|source| self.sql(source))?;
            let id = tx.sql().last_insert_rowid() as u64;
            self.record_in(tx, COUNTER_EDITOR, counts)?;
            Ok(id)
        })
    }

    /// Records that the task of lookup `retrieval` (made by `tenant`)
    /// passed or failed, as `judge` saw it, and counts it for each insight
    /// the lookup chose (`helped` or `hurt`).
    pub fn record_outcome(
        &self,
        tenant: &str,
        retrieval: u64,
        passed: bool,
        judge: &str,
        detail: &str,
    ) -> Result<Outcome, ExperienceError> {
        if crate::editor_problem(judge).is_some() {
            return Err(ExperienceError::Invalid("`judge` must be 1 to 100 characters".to_owned()));
        }
        self.store.write(|tx| {
            let chosen: Option<String> = tx
                .sql()
                .query_row(
                    "SELECT chosen FROM insight_retrievals WHERE id = ?1 AND tenant = ?2",
                    params![retrieval as i64, tenant],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|source| self.sql(source))?;
            let chosen = chosen.ok_or(ExperienceError::UnknownRetrieval(retrieval))?;
            let chosen: Vec<String> = from_json(&chosen)?;
            let at_ms = tx.at_ms();
            tx.sql()
                .execute(
                    "INSERT INTO insight_outcomes (retrieval, at_ms, passed, judge, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![retrieval as i64, at_ms, passed, judge, detail],
                )
                .map_err(|source| self.sql(source))?;
            let id = tx.sql().last_insert_rowid() as u64;
            let counters =
                if passed { Counters { helped: 1, ..Counters::default() } } else { Counters { hurt: 1, ..Counters::default() } };
            self.record_in(tx, judge, counted(&chosen, counters))?;
            Ok(Outcome { id, retrieval, at_ms, passed, judge: judge.to_owned(), detail: detail.to_owned() })
        })
    }

    /// Every recorded lookup with its outcomes, oldest first.
    pub fn retrievals(&self) -> Result<Vec<Retrieval>, ExperienceError> {
        let (lookups, outcomes) = self.store.read(|conn| {
            let lookups = query(
                conn,
                "SELECT id, tenant, task_id, task, at_ms, candidates, chosen, checked FROM insight_retrievals ORDER BY id",
                |row| {
                    Ok((
                        row.get::<_, i64>(0)? as u64,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, String>(6)?,
                        row.get::<_, bool>(7)?,
                    ))
                },
            )?;
            let outcomes =
                query(conn, "SELECT id, retrieval, at_ms, passed, judge, detail FROM insight_outcomes ORDER BY id", |row| {
                    Ok(Outcome {
                        id: row.get::<_, i64>(0)? as u64,
                        retrieval: row.get::<_, i64>(1)? as u64,
                        at_ms: row.get(2)?,
                        passed: row.get(3)?,
                        judge: row.get(4)?,
                        detail: row.get(5)?,
                    })
                })?;
            Ok::<_, rusqlite::Error>((lookups, outcomes))
        })?;
        let mut by_lookup: std::collections::HashMap<u64, Vec<Outcome>> = std::collections::HashMap::new();
        for outcome in outcomes {
            by_lookup.entry(outcome.retrieval).or_default().push(outcome);
        }
        let mut retrievals = Vec::with_capacity(lookups.len());
        for (id, tenant, task_id, task, at_ms, candidates, chosen, checked) in lookups {
            retrievals.push(Retrieval {
                id,
                tenant,
                task_id,
                task,
                at_ms,
                candidates: from_json(&candidates)?,
                chosen: from_json(&chosen)?,
                checked,
                outcomes: by_lookup.remove(&id).unwrap_or_default(),
            });
        }
        Ok(retrievals)
    }
}

/// The same counters for each of `ids`, as changes (checked).
fn counted(ids: &[String], counters: Counters) -> Vec<(Option<String>, Change)> {
    let change = Change::Counted(counters);
    debug_assert!(check(&change).is_ok());
    ids.iter().map(|id| (Some(id.clone()), change.clone())).collect()
}

fn query<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.prepare(sql)?.query_map([], map)?.collect()
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, ExperienceError> {
    serde_json::to_string(value).map_err(|err| ExperienceError::Invalid(err.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ExperienceError> {
    serde_json::from_str(text)
        .map_err(|err| ExperienceError::Invalid(format!("a recorded lookup is unreadable: {err}")))
}
