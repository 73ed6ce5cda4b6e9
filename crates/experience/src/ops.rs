//! The experience library's operations: one request type each, with its
//! defaults, checks and route. The HTTP routes and the CLI (`engram
//! insights …`) send these; the library is the operator's.

use engram_ops::{Error, Method, Operation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::files::{ImportReport, ImportedFile};
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

fn check_editor(editor: &str) -> Result<(), Error> {
    crate::editor_problem(editor).map_or(Ok(()), |problem| Err(Error::invalid(problem)))
}

impl From<ExperienceError> for Error {
    fn from(err: ExperienceError) -> Self {
        match err {
            ExperienceError::UnknownInsight(_) => Self::not_found(err.to_string()),
            ExperienceError::Invalid(_) => Self::invalid(err.to_string()),
            ExperienceError::Corrupt { .. } | ExperienceError::Store(_) => Self::internal(err),
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
