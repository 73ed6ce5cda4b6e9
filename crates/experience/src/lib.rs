//! Engram's experience library (AlphaOPT): explicit insights — {taxonomy,
//! condition, explanation, example} — learned from verified failures and
//! refined over time, that people can read and edit.
//!
//! Every change to an insight is an [`Event`] in the journal
//! (`insight_events`); the library is nothing but the [`fold`] of those
//! events in order, so it can always be rebuilt, byte for byte, and every
//! insight has a history. [`files`] writes the library as one TOML file per
//! insight and reads a person's edits back as events.

pub mod eval;
pub mod evolve;
pub mod files;
pub mod learn;
pub mod ops;
pub mod record;
pub mod retrieve;
pub mod task;

use std::collections::BTreeMap;

use engram_store::rusqlite::params;
use engram_store::{Entity, Op, Store, StoreError, WriteTx};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where an insight stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Proposed, not yet admitted: never retrieved for tasks.
    Candidate,
    /// In use.
    Active,
    /// Taken out of use on evidence that it hurts; kept for review.
    Quarantined,
    /// Taken out of use for good (kept, with its history).
    Retired,
}

impl Status {
    /// Its name in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Active => "active",
            Self::Quarantined => "quarantined",
            Self::Retired => "retired",
        }
    }
}

/// Where an insight came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The task whose failure it was learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// What the verifier said of that failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The model (or person) that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// How an insight has fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Times it was put into a task's prompt.
    pub retrieved: u64,
    /// Times the task then passed its verifier.
    pub helped: u64,
    /// Times the task then failed.
    pub hurt: u64,
    /// Times it was not retrieved for a task it would have fixed.
    pub missed: u64,
}

/// The text of an insight: what a person reads and edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Where it belongs, as a `/`-separated path: `formulation/constraints/capacity`.
    pub taxonomy: String,
    /// When it applies, in words.
    pub condition: String,
    /// Why.
    pub explanation: String,
    /// A short worked case.
    pub example: String,
}

/// Longest taxonomy path, in bytes.
pub const MAX_TAXONOMY: usize = 200;
/// Longest condition, explanation or example, in bytes.
pub const MAX_FIELD: usize = 8 << 10;

impl Text {
    /// What is wrong with it, if anything (the message names the field).
    pub fn problem(&self) -> Option<String> {
        let taxonomy = &self.taxonomy;
        if taxonomy.is_empty() || taxonomy.len() > MAX_TAXONOMY {
            return Some(format!("`taxonomy` must hold 1 to {MAX_TAXONOMY} bytes"));
        }
        let segment_ok = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        };
        if !taxonomy.split('/').all(segment_ok) {
            return Some(format!(
                "`taxonomy` `{taxonomy}` must be `/`-separated segments of lowercase letters, digits, `_` and `-`"
            ));
        }
        for (name, value) in [("condition", &self.condition), ("explanation", &self.explanation)] {
            if value.trim().is_empty() {
                return Some(format!("`{name}` is empty"));
            }
        }
        for (name, value) in
            [("condition", &self.condition), ("explanation", &self.explanation), ("example", &self.example)]
        {
            if value.len() > MAX_FIELD {
                return Some(format!("`{name}` is longer than {MAX_FIELD} bytes"));
            }
        }
        None
    }
}

/// An insight as the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Insight {
    /// Its id (`ins-<n>`, from the event that created it).
    pub id: String,
    /// What it says.
    #[serde(flatten)]
    pub text: Text,
    /// Where it stands.
    pub status: Status,
    /// Where it came from.
    pub provenance: Provenance,
    /// How it has fared.
    pub counters: Counters,
    /// Bumped by every change of its text or status (not by counters).
    pub version: u64,
}

/// One change of one insight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// It was written.
    Created {
        /// Its text.
        #[serde(flatten)]
        text: Text,
        /// Candidate or active.
        status: Status,
        /// Where it came from.
        provenance: Provenance,
    },
    /// Fields of its text were rewritten (the others stay).
    Edited {
        /// New taxonomy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taxonomy: Option<String>,
        /// New condition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        /// New explanation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        explanation: Option<String>,
        /// New example.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        example: Option<String>,
    },
    /// Its status changed.
    Status {
        /// The new status.
        status: Status,
        /// Why.
        reason: String,
    },
    /// Outcomes to add to its counters.
    Counted(Counters),
}

/// One event of the library: a change, who made it, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Its position: events fold in this order.
    pub seq: i64,
    /// The insight it changes.
    pub insight: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: i64,
    /// Who: a person, a model, or `engram` itself.
    pub editor: String,
    /// What.
    pub change: Change,
}

/// Why an event or a request cannot apply.
#[derive(Debug, thiserror::Error)]
pub enum ExperienceError {
    /// No insight has that id.
    #[error("no insight `{0}`")]
    UnknownInsight(String),
    /// The caller made no lookup with that id.
    #[error("no insight lookup {0} of yours (the id a lookup answered)")]
    UnknownRetrieval(u64),
    /// A request or an edit is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The journal's events do not fold (a bug, or a hand-edited journal).
    #[error("event {seq} of `{insight}` does not apply: {problem}")]
    Corrupt {
        /// The event.
        seq: i64,
        /// Its insight.
        insight: String,
        /// Why.
        problem: String,
    },
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Work on the blocking pool panicked (a bug).
    #[error("{0}")]
    Panicked(String),
    /// The insights' indexes or the embedder failed.
    #[error("the insights' index: {0}")]
    Index(engram_index::IndexError),
}

/// What every insight id starts with; the number after it is the `seq` of
/// the event that created it.
pub const ID_PREFIX: &str = "ins-";

/// The number of insight `id` (`ins-12` → 12).
pub fn number(id: &str) -> Option<u64> {
    id.strip_prefix(ID_PREFIX)?.parse().ok()
}

/// The library: every insight by id, in id order.
pub type Library = BTreeMap<String, Insight>;

/// Applies `event` to `library`.
pub fn apply(library: &mut Library, event: &Event) -> Result<(), ExperienceError> {
    let corrupt = |problem: &str| ExperienceError::Corrupt {
        seq: event.seq,
        insight: event.insight.clone(),
        problem: problem.to_owned(),
    };
    if let Change::Created { text, status, provenance } = &event.change {
        if library.contains_key(&event.insight) {
            return Err(corrupt("created twice"));
        }
        let insight = Insight {
            id: event.insight.clone(),
            text: text.clone(),
            status: *status,
            provenance: provenance.clone(),
            counters: Counters::default(),
            version: 1,
        };
        library.insert(event.insight.clone(), insight);
        return Ok(());
    }
    let insight = library.get_mut(&event.insight).ok_or_else(|| corrupt("changes an insight never created"))?;
    match &event.change {
        Change::Created { .. } => unreachable!("handled above"),
        Change::Edited { taxonomy, condition, explanation, example } => {
            let text = &mut insight.text;
            for (field, new) in [
                (&mut text.taxonomy, taxonomy),
                (&mut text.condition, condition),
                (&mut text.explanation, explanation),
                (&mut text.example, example),
            ] {
                if let Some(new) = new {
                    field.clone_from(new);
                }
            }
            insight.version += 1;
        }
        Change::Status { status, .. } => {
            insight.status = *status;
            insight.version += 1;
        }
        Change::Counted(more) => {
            let counters = &mut insight.counters;
            counters.retrieved += more.retrieved;
            counters.helped += more.helped;
            counters.hurt += more.hurt;
            counters.missed += more.missed;
        }
    }
    Ok(())
}

/// The library the events make, applied in order.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<Library, ExperienceError> {
    let mut library = Library::new();
    for event in events {
        apply(&mut library, event)?;
    }
    Ok(library)
}

/// The experience library in a journal.
#[derive(Clone)]
pub struct Experience {
    store: Store,
}

impl Experience {
    /// The library kept in `store` (the journal's `insight_events`).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn sql(&self, source: engram_store::rusqlite::Error) -> ExperienceError {
        ExperienceError::Store(StoreError::Sqlite { path: self.store.path().to_path_buf(), source })
    }

    /// Every event, in order (of one insight, if named).
    pub fn events(&self, insight: Option<&str>) -> Result<Vec<Event>, ExperienceError> {
        decode(self.store.read(|conn| rows(conn, insight))?)
    }

    /// The library now.
    pub fn library(&self) -> Result<Library, ExperienceError> {
        fold(&self.events(None)?)
    }

    /// One insight now.
    pub fn get(&self, id: &str) -> Result<Insight, ExperienceError> {
        let events = self.events(Some(id))?;
        fold(&events)?.remove(id).ok_or_else(|| ExperienceError::UnknownInsight(id.to_owned()))
    }

    /// Records `changes` as one transaction, by `editor`: each is checked
    /// against the library as the ones before it leave it, so a batch
    /// applies whole or not at all. A `None` insight is a new one (its
    /// change must be [`Change::Created`]); its id is assigned here.
    /// Returns the events written.
    pub fn record(&self, editor: &str, changes: Vec<(Option<String>, Change)>) -> Result<Vec<Event>, ExperienceError> {
        if let Some(problem) = editor_problem(editor) {
            return Err(ExperienceError::Invalid(problem));
        }
        for (_, change) in &changes {
            check(change)?;
        }
        self.store.write(|tx| self.record_in(tx, editor, changes))
    }

    /// [`Experience::record`] inside a transaction of the caller's (whose
    /// other writes then stand or fall with these events). The changes
    /// must have passed [`check`].
    pub(crate) fn record_in(
        &self,
        tx: &mut WriteTx<'_>,
        editor: &str,
        changes: Vec<(Option<String>, Change)>,
    ) -> Result<Vec<Event>, ExperienceError> {
        let at_ms = tx.at_ms();
        let mut written = Vec::with_capacity(changes.len());
        // The insights this batch touches, as the journal has them.
        let mut touched = Library::new();
        for (insight, change) in changes {
            let insight = match insight {
                Some(id) => {
                    if !touched.contains_key(&id) {
                        let events = decode(rows(tx.sql(), Some(&id)).map_err(|source| self.sql(source))?)?;
                        let known =
                            fold(&events)?.remove(&id).ok_or_else(|| ExperienceError::UnknownInsight(id.clone()))?;
                        touched.insert(id.clone(), known);
                    }
                    id
                }
                None => {
                    if !matches!(change, Change::Created { .. }) {
                        return Err(ExperienceError::Invalid("a new insight starts with its text".to_owned()));
                    }
                    let next: i64 = tx
                        .sql()
                        .query_row("SELECT coalesce(max(seq), 0) + 1 FROM insight_events", [], |row| row.get(0))
                        .map_err(|source| self.sql(source))?;
                    format!("{ID_PREFIX}{next}")
                }
            };
            let body = serde_json::to_string(&change).map_err(|err| ExperienceError::Invalid(err.to_string()))?;
            tx.sql()
                .execute(
                    "INSERT INTO insight_events (insight, at_ms, editor, change) VALUES (?1, ?2, ?3, ?4)",
                    params![insight, at_ms, editor, body],
                )
                .map_err(|source| self.sql(source))?;
            let seq = tx.sql().last_insert_rowid();
            let event = Event { seq, insight: insight.clone(), at_ms, editor: editor.to_owned(), change };
            apply(&mut touched, &event)?;
            // The indexes know an insight by its number (counters do not
            // change what they index).
            if !matches!(event.change, Change::Counted(_))
                && let Some(number) = number(&insight)
            {
                tx.record(Entity::Insight, &number.to_string(), Op::Upsert)?;
            }
            written.push(event);
        }
        Ok(written)
    }

    /// Writes a new insight; returns it.
    pub fn create(
        &self,
        editor: &str,
        text: Text,
        status: Status,
        provenance: Provenance,
    ) -> Result<Insight, ExperienceError> {
        let written = self.record(editor, vec![(None, Change::Created { text, status, provenance })])?;
        let id = written.first().map(|event| event.insight.clone()).unwrap_or_default();
        self.get(&id)
    }

    /// Changes an insight's status, saying why.
    pub fn set_status(&self, editor: &str, id: &str, status: Status, reason: &str) -> Result<Insight, ExperienceError> {
        let change = Change::Status { status, reason: reason.to_owned() };
        self.record(editor, vec![(Some(id.to_owned()), change)])?;
        self.get(id)
    }
}

/// An event's columns: seq, insight, at_ms, editor, change.
type Row = (i64, String, i64, String, String);

/// The rows of every event (of one insight, if named), in order.
fn rows(conn: &engram_store::rusqlite::Connection, insight: Option<&str>) -> engram_store::rusqlite::Result<Vec<Row>> {
    let mut statement = conn.prepare(
        "SELECT seq, insight, at_ms, editor, change FROM insight_events WHERE ?1 IS NULL OR insight = ?1 ORDER BY seq",
    )?;
    let rows = statement
        .query_map(params![insight], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))?;
    rows.collect()
}

/// Events from their rows.
fn decode(rows: Vec<Row>) -> Result<Vec<Event>, ExperienceError> {
    rows.into_iter()
        .map(|(seq, insight, at_ms, editor, change)| {
            let change = serde_json::from_str(&change).map_err(|err| ExperienceError::Corrupt {
                seq,
                insight: insight.clone(),
                problem: format!("unreadable change: {err}"),
            })?;
            Ok(Event { seq, insight, at_ms, editor, change })
        })
        .collect()
}

/// What is wrong with an editor's name, if anything: it names who makes a
/// change, in 1 to 100 characters, none of them control characters.
pub fn editor_problem(editor: &str) -> Option<String> {
    (editor.trim().is_empty() || editor.chars().count() > 100 || editor.chars().any(char::is_control))
        .then(|| "`editor` must name who makes the change (1 to 100 characters)".to_owned())
}

/// What is wrong with a change on its own, if anything.
pub(crate) fn check(change: &Change) -> Result<(), ExperienceError> {
    let invalid = |problem: String| Err(ExperienceError::Invalid(problem));
    match change {
        Change::Created { text, status, .. } => {
            if let Some(problem) = text.problem() {
                return invalid(problem);
            }
            if !matches!(status, Status::Candidate | Status::Active) {
                return invalid(format!("a new insight is a candidate or active, not {}", status.as_str()));
            }
        }
        Change::Edited { taxonomy, condition, explanation, example } => {
            if [taxonomy, condition, explanation, example].iter().all(|field| field.is_none()) {
                return invalid("an edit changes nothing".to_owned());
            }
            // Checked as a whole text with placeholders for what it keeps.
            let keep = |field: &Option<String>| field.clone().unwrap_or_else(|| "kept".to_owned());
            let text = Text {
                taxonomy: keep(taxonomy),
                condition: keep(condition),
                explanation: keep(explanation),
                example: keep(example),
            };
            if let Some(problem) = text.problem() {
                return invalid(problem);
            }
        }
        Change::Status { reason, .. } if reason.trim().is_empty() => {
            return invalid("a status change needs a reason".to_owned());
        }
        Change::Status { .. } | Change::Counted(_) => {}
    }
    Ok(())
}
