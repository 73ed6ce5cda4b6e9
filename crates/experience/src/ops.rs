//! The experience library's operations: one request type each, with its
//! defaults, checks and route. The HTTP routes and the CLI (`engram
//! insights …`) send these; the library is the operator's.

use engram_ops::{Audience, Error, Hints, Method, Operation, TenantId, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::files::{ImportReport, ImportedFile};
use crate::record::Outcome;
use crate::{Change, Event, ExperienceError, Insight, Status};

/// Most files one import may carry.
pub const MAX_IMPORT_FILES: usize = 10_000;

/// `GET /v1/insights`: the insights, all or those with a status and under a
/// taxonomy path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInsights {
    /// Only insights with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Only insights at or under this taxonomy path (`formulation`
    /// matches `formulation/constraints/capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<String>,
}

impl ListInsights {
    /// Whether `insight` is one asked for.
    pub fn admits(&self, insight: &Insight) -> bool {
        let under = |path: &str| {
            let taxonomy = &insight.text.taxonomy;
            taxonomy == path || taxonomy.strip_prefix(path).is_some_and(|rest| rest.starts_with('/'))
        };
        self.status.is_none_or(|status| insight.status == status) && self.taxonomy.as_deref().is_none_or(under)
    }
}

/// The insights asked for, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InsightList {
    /// The insights.
    pub insights: Vec<Insight>,
}

impl Operation for ListInsights {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/insights";
    type Response = InsightList;
}

/// `GET /v1/insights/show`: one insight with its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowInsight {
    /// The insight (`ins-<n>`).
    pub id: String,
}

/// An insight now, and every event that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InsightHistory {
    /// The insight now.
    pub insight: Insight,
    /// Its events, oldest first.
    pub events: Vec<Event>,
}

impl Operation for ShowInsight {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/v1/insights/show";
    type Response = InsightHistory;
}

/// `POST /v1/insights/status`: activates, quarantines or retires an
/// insight, saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetInsightStatus {
    /// The insight.
    pub id: String,
    /// Its new status.
    pub status: Status,
    /// Why (kept in its history).
    pub reason: String,
    /// Who decides.
    pub editor: String,
}

impl Operation for SetInsightStatus {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/status";
    type Response = Insight;

    fn validate(&self) -> Result<(), Error> {
        if self.reason.trim().is_empty() {
            return Err(Error::invalid("`reason` is empty: say why, it is kept in the insight's history"));
        }
        check_editor(&self.editor)
    }
}

/// `POST /v1/insights/edit`: rewrites fields of an insight's text (the
/// others stay), as an event by `editor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditInsight {
    /// The insight.
    pub id: String,
    /// New taxonomy path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<String>,
    /// New condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// New explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// New example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
    /// Who edits.
    pub editor: String,
}

impl EditInsight {
    /// The change it records.
    pub fn change(&self) -> Change {
        Change::Edited {
            taxonomy: self.taxonomy.clone(),
            condition: self.condition.clone(),
            explanation: self.explanation.clone(),
            example: self.example.clone(),
        }
    }
}

impl Operation for EditInsight {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/edit";
    type Response = Insight;

    fn validate(&self) -> Result<(), Error> {
        check_editor(&self.editor)?;
        crate::check(&self.change()).map_err(Error::from)
    }
}

/// `POST /v1/insights/import`: applies insight files a person edited (read
/// on their side, so errors name their files and lines) as events by
/// `editor`, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInsights {
    /// The files, in name order.
    pub files: Vec<ImportedFile>,
    /// Who edited them.
    pub editor: String,
}

impl Operation for ImportInsights {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/import";
    type Response = ImportReport;

    fn validate(&self) -> Result<(), Error> {
        if self.files.len() > MAX_IMPORT_FILES {
            return Err(Error::invalid(format!("an import carries at most {MAX_IMPORT_FILES} files")));
        }
        check_editor(&self.editor)
    }
}

/// `POST /v1/insights/evolve`: one evolution of the library from the
/// recorded lookups and outcomes: conditions rewritten, harmful insights
/// quarantined, near-duplicates merged, all as events (revert any with
/// [`RevertInsight`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvolveInsights {
    /// Say what would change, record nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Rewrites to weigh per insight (default: `experience.rewrites`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrites: Option<usize>,
}

impl Operation for EvolveInsights {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/evolve";
    type Response = crate::evolve::Evolution;

    fn validate(&self) -> Result<(), Error> {
        if self.rewrites.is_some_and(|k| !(1..=10).contains(&k)) {
            return Err(Error::invalid("`rewrites` must be 1 to 10"));
        }
        Ok(())
    }
}

/// `POST /v1/insights/revert`: restores an insight's text and status as
/// they were at `version`, as new events by `editor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertInsight {
    /// The insight.
    pub id: String,
    /// The version to restore.
    pub version: u64,
    /// Who reverts.
    pub editor: String,
}

impl Operation for RevertInsight {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/revert";
    type Response = Insight;

    fn validate(&self) -> Result<(), Error> {
        check_editor(&self.editor)
    }
}

/// The longest task text a lookup takes, in bytes.
pub const MAX_TASK_BYTES: usize = 64 << 10;
/// Most insights one lookup may put into a prompt.
pub const MAX_LOOKUP: usize = 20;

/// `POST /v1/insights/lookup`: the active insights that fit a task, in
/// the compact block a prompt carries them in. Candidates come from the
/// taxonomy and from the similarity of the task to each insight's
/// condition; the LLM's applicability check (when on) picks among them.
/// The lookup is recorded; send its outcome with [`InsightFeedback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupInsights {
    /// The task, in words.
    pub task: String,
    /// Your name for the task (kept with the lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Only insights at or under this taxonomy path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxonomy: Option<String>,
    /// Most insights to choose (default: `experience.insights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Whether the LLM checks which candidates apply (default:
    /// `experience.applicability_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<bool>,
    /// Whose lookup (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

impl LookupInsights {
    /// A lookup for `task` with the defaults.
    pub fn new(task: impl Into<String>) -> Self {
        Self { task: task.into(), task_id: None, taxonomy: None, k: None, check: None, tenant: None }
    }
}

/// An insight a lookup chose, as a prompt (and a person) reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Chosen {
    /// The insight.
    pub id: String,
    /// Where it belongs.
    pub taxonomy: String,
    /// When it applies.
    pub condition: String,
    /// Why.
    pub explanation: String,
    /// A short worked case.
    pub example: String,
    /// Its relevance to the task among this lookup's candidates.
    pub score: f64,
    /// The cosine similarity of the task and its condition.
    pub similarity: f32,
}

/// What [`LookupInsights`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InsightLookup {
    /// The lookup's id: name it in [`InsightFeedback`].
    pub retrieval: u64,
    /// The insights chosen, in prompt order.
    pub insights: Vec<Chosen>,
    /// The block to put into the prompt (empty when none was chosen).
    pub prompt: String,
    /// Candidates weighed.
    pub candidates: usize,
    /// Whether the LLM's applicability check chose them (false when it
    /// was off or the generator was unavailable).
    pub checked: bool,
}

impl Operation for LookupInsights {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/lookup";
    type Response = InsightLookup;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.task.trim().is_empty() {
            return Err(Error::invalid("`task` is empty: describe the task the insights are for"));
        }
        if self.task.len() > MAX_TASK_BYTES {
            return Err(Error::invalid(format!("`task` is longer than {MAX_TASK_BYTES} bytes")));
        }
        if self.k.is_some_and(|k| !(1..=MAX_LOOKUP).contains(&k)) {
            return Err(Error::invalid(format!("`k` must be 1 to {MAX_LOOKUP}")));
        }
        if let Some(task_id) = &self.task_id {
            check_name("task_id", task_id)?;
        }
        if let Some(taxonomy) = &self.taxonomy {
            // A path is checked as an insight's taxonomy is.
            let text = crate::Text {
                taxonomy: taxonomy.clone(),
                condition: "-".into(),
                explanation: "-".into(),
                example: String::new(),
            };
            if let Some(problem) = text.problem() {
                return Err(Error::invalid(problem));
            }
        }
        Ok(())
    }
}

impl Tool for LookupInsights {
    const NAME: &'static str = "experience_lookup";
    const TITLE: &'static str = "Look up insights for a task";
    const HINTS: Hints = Hints { read_only: false, destructive: false, idempotent: false, open_world: false };
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// The longest diagnosis feedback carries, in bytes.
pub const MAX_DIAGNOSIS_BYTES: usize = 8 << 10;

/// `POST /v1/insights/feedback`: whether the task of a lookup passed, with
/// an optional diagnosis; counted for each insight the lookup chose
/// (`helped` or `hurt`) and kept for the library's evolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsightFeedback {
    /// The lookup (its `retrieval`).
    pub retrieval: u64,
    /// Whether the task then passed.
    pub passed: bool,
    /// What went wrong (or right), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// Who judged (default `client`).
    #[serde(default = "default_judge")]
    pub judge: String,
    /// Whose lookup (set from a tenant's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

fn default_judge() -> String {
    "client".to_owned()
}

impl InsightFeedback {
    /// Feedback on lookup `retrieval` with the defaults.
    pub fn new(retrieval: u64, passed: bool) -> Self {
        Self { retrieval, passed, diagnosis: None, judge: default_judge(), tenant: None }
    }
}

impl Operation for InsightFeedback {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/v1/insights/feedback";
    type Response = Outcome;
    const AUDIENCE: Audience<Self> = Audience::Tenant(|request| &mut request.tenant);

    fn validate(&self) -> Result<(), Error> {
        if self.diagnosis.as_ref().is_some_and(|d| d.len() > MAX_DIAGNOSIS_BYTES) {
            return Err(Error::invalid(format!("`diagnosis` is longer than {MAX_DIAGNOSIS_BYTES} bytes")));
        }
        check_name("judge", &self.judge)
    }
}

impl Tool for InsightFeedback {
    const NAME: &'static str = "experience_feedback";
    const TITLE: &'static str = "Report whether a task the insights were for passed";
    const HINTS: Hints = Hints { read_only: false, destructive: false, idempotent: false, open_world: false };
    const HIDDEN: &'static [&'static str] = &["tenant"];
}

/// A name a person or program gives (`task_id`, `judge`): 1 to 100
/// characters, none of them control characters, as an editor's.
fn check_name(field: &str, name: &str) -> Result<(), Error> {
    match crate::editor_problem(name) {
        Some(_) => {
            Err(Error::invalid(format!("`{field}` must be 1 to 100 characters, none of them control characters")))
        }
        None => Ok(()),
    }
}

fn check_editor(editor: &str) -> Result<(), Error> {
    crate::editor_problem(editor).map_or(Ok(()), |problem| Err(Error::invalid(problem)))
}

impl From<ExperienceError> for Error {
    fn from(err: ExperienceError) -> Self {
        match err {
            ExperienceError::UnknownInsight(_) | ExperienceError::UnknownRetrieval(_) => {
                Self::not_found(err.to_string())
            }
            ExperienceError::Invalid(_) => Self::invalid(err.to_string()),
            ExperienceError::Corrupt { .. }
            | ExperienceError::Store(_)
            | ExperienceError::Index(_)
            | ExperienceError::Panicked(_) => Self::internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counters, Provenance, Text};

    #[test]
    fn filters_and_checks_are_the_operations_own() {
        let insight = Insight {
            id: "ins-1".into(),
            text: Text { taxonomy: "formulation/constraints".into(), ..Text::default() },
            status: Status::Active,
            provenance: Provenance::default(),
            counters: Counters::default(),
            version: 1,
        };
        let list = |status, taxonomy: Option<&str>| ListInsights { status, taxonomy: taxonomy.map(str::to_owned) };
        assert!(list(None, None).admits(&insight));
        assert!(list(Some(Status::Active), Some("formulation")).admits(&insight));
        assert!(!list(None, Some("formulat")).admits(&insight), "a path segment, not a prefix of one");
        assert!(!list(Some(Status::Retired), None).admits(&insight));
        let status = |reason: &str, editor: &str| SetInsightStatus {
            id: "ins-1".into(),
            status: Status::Retired,
            reason: reason.into(),
            editor: editor.into(),
        };
        assert!(status("superseded by ins-9", "ana").validate().is_ok());
        assert!(status(" ", "ana").validate().unwrap_err().message.contains("reason"));
        assert!(status("old", "a\nb").validate().unwrap_err().message.contains("editor"));
    }
}
