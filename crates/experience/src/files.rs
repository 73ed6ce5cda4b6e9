//! The library as files people edit: `engram insights export DIR` writes
//! one TOML file per insight (`<id>.toml`) and `taxonomy.toml` (how many
//! insights each taxonomy path holds); `import DIR` reads them back and
//! records what a person changed — text fields and status — as events by
//! that person. Provenance, counters and version are shown, never read
//! back. A file without an `id` is a new insight. A file exported before
//! its insight last changed is refused unless it matches the insight now,
//! so an import never undoes a change it did not see.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Change, Counters, Experience, ExperienceError, Insight, Library, Provenance, Status, Text};

/// The file that lists the taxonomy (written, never read back).
pub const TAXONOMY_FILE: &str = "taxonomy.toml";

const HEADER: &str = "\
# An Engram insight. Edit `status` (candidate, active, quarantined, retired),
# `taxonomy`, `condition`, `explanation` and `example`, then run
# `engram insights import` on this folder. `provenance`, `counters` and
# `version` are read-only. Delete `id` to make a copy a new insight.
";

/// One insight's file, as a person edits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsightFile {
    /// Its insight; none: a new insight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its status.
    pub status: Status,
    /// Its taxonomy path.
    pub taxonomy: String,
    /// When it applies.
    pub condition: String,
    /// Why.
    pub explanation: String,
    /// A short worked case.
    #[serde(default)]
    pub example: String,
    /// The version exported (none in a new file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Where it came from (read-only).
    #[serde(default)]
    pub provenance: Provenance,
    /// How it has fared (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

/// A file read by [`read`]: its path as read (for messages) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedFile {
    /// The file's path.
    pub name: String,
    /// Its insight.
    pub insight: InsightFile,
}

impl InsightFile {
    fn of(insight: &Insight) -> Self {
        Self {
            id: Some(insight.id.clone()),
            status: insight.status,
            taxonomy: insight.text.taxonomy.clone(),
            condition: insight.text.condition.clone(),
            explanation: insight.text.explanation.clone(),
            example: insight.text.example.clone(),
            version: Some(insight.version),
            provenance: insight.provenance.clone(),
            counters: Some(insight.counters),
        }
    }

    fn text(&self) -> Text {
        Text {
            taxonomy: self.taxonomy.clone(),
            condition: self.condition.clone(),
            explanation: self.explanation.clone(),
            example: self.example.clone(),
        }
    }
}

/// Why an export or import failed; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file or the folder cannot be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
    /// A file is not a valid insight file.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file parses but cannot apply (named as it was given).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The library failed.
    #[error(transparent)]
    Experience(#[from] ExperienceError),
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportReport {
    /// New insights, by id.
    pub created: Vec<String>,
    /// Insights changed, by id.
    pub changed: Vec<String>,
    /// Files that matched their insight.
    pub unchanged: usize,
}

/// The text of `insight`'s file.
fn render(insight: &Insight) -> Result<String, FilesError> {
    let body = toml::to_string(&InsightFile::of(insight))
        .map_err(|err| ExperienceError::Invalid(format!("cannot write insight {}: {err}", insight.id)))?;
    Ok(format!("{HEADER}\n{body}"))
}

/// Writes the library into `dir` (created if missing): `<id>.toml` per
/// insight and [`TAXONOMY_FILE`]. Files of insights no longer in the library
/// are left alone. Returns how many insights it wrote.
pub fn export(library: &Library, dir: &Path) -> Result<usize, FilesError> {
    let io = |path: &Path, err: std::io::Error| FilesError::Io { path: path.to_path_buf(), message: err.to_string() };
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    let mut taxonomy: BTreeMap<&str, usize> = BTreeMap::new();
    for insight in library.values() {
        let path = dir.join(format!("{}.toml", insight.id));
        std::fs::write(&path, render(insight)?).map_err(|err| io(&path, err))?;
        *taxonomy.entry(insight.text.taxonomy.as_str()).or_default() += 1;
    }
    let mut listing =
        String::from("# How many insights each taxonomy path holds (written by export; not read back).\n");
    for (path, count) in &taxonomy {
        listing.push_str(&format!("\"{path}\" = {count}\n"));
    }
    let path = dir.join(TAXONOMY_FILE);
    std::fs::write(&path, listing).map_err(|err| io(&path, err))?;
    Ok(library.len())
}

/// The line `offset` (a byte in `text`) is on, from 1.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads every insight file in `dir` and records what changed, by
/// `editor`, in one transaction: all files apply or none do.
pub fn import(experience: &Experience, dir: &Path, editor: &str) -> Result<ImportReport, FilesError> {
    apply(experience, &read(dir)?, editor)
}

/// Reads every insight file in `dir` (not [`TAXONOMY_FILE`]), in name
/// order; a file that does not parse, or whose text is invalid, is named
/// with the line.
pub fn read(dir: &Path) -> Result<Vec<ImportedFile>, FilesError> {
    let io = |path: &Path, err: std::io::Error| FilesError::Io { path: path.to_path_buf(), message: err.to_string() };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| io(dir, err))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .filter(|path| path.file_name().is_some_and(|name| name != TAXONOMY_FILE))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|err| io(&path, err))?;
        let insight: InsightFile = toml::from_str(&text).map_err(|err| FilesError::Parse {
            path: path.clone(),
            line: err.span().map_or(1, |span| line_of(&text, span.start)),
            message: err.message().to_owned(),
        })?;
        if let Some(problem) = insight.text().problem() {
            return Err(FilesError::Invalid { path, message: problem });
        }
        files.push(ImportedFile { name: path.display().to_string(), insight });
    }
    Ok(files)
}

/// Records what `files` change in the library, by `editor`, in one
/// transaction: all apply or none do.
pub fn apply(experience: &Experience, files: &[ImportedFile], editor: &str) -> Result<ImportReport, FilesError> {
    let library = experience.library()?;
    let mut report = ImportReport::default();
    let mut changes: Vec<(Option<String>, Change)> = Vec::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for ImportedFile { name, insight: file } in files {
        let path = PathBuf::from(name);
        let invalid = |message: String| FilesError::Invalid { path: path.clone(), message };
        if let Some(problem) = file.text().problem() {
            return Err(invalid(problem));
        }
        let Some(id) = &file.id else {
            let created =
                Change::Created { text: file.text(), status: file.status, provenance: file.provenance.clone() };
            changes.push((None, created));
            continue;
        };
        if let Some(other) = seen.insert(id.clone(), name) {
            return Err(invalid(format!("insight `{id}` is also in {other}")));
        }
        let Some(now) = library.get(id) else {
            return Err(invalid(format!("no insight `{id}` in the library (delete `id` to add it as a new one)")));
        };
        let text = file.text();
        let edited = Change::Edited {
            taxonomy: (text.taxonomy != now.text.taxonomy).then(|| text.taxonomy.clone()),
            condition: (text.condition != now.text.condition).then(|| text.condition.clone()),
            explanation: (text.explanation != now.text.explanation).then(|| text.explanation.clone()),
            example: (text.example != now.text.example).then(|| text.example.clone()),
        };
        let text_changed = text != now.text;
        let status_changed = file.status != now.status;
        if !text_changed && !status_changed {
            report.unchanged += 1;
            continue;
        }
        if file.version != Some(now.version) {
            return Err(invalid(format!(
                "insight `{id}` changed since this file was written (version {} now, {} in the file): \
                 export again and redo the edit",
                now.version,
                file.version.map_or_else(|| "none".to_owned(), |v| v.to_string())
            )));
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let reason = format!("edited in {file_name}");
        if text_changed {
            changes.push((Some(id.clone()), edited));
        }
        if status_changed {
            changes.push((Some(id.clone()), Change::Status { status: file.status, reason }));
        }
        report.changed.push(id.clone());
    }
    let written = experience.record(editor, changes)?;
    report.created = written
        .iter()
        .filter(|event| matches!(event.change, Change::Created { .. }))
        .map(|e| e.insight.clone())
        .collect();
    Ok(report)
}

impl From<FilesError> for engram_ops::Error {
    fn from(err: FilesError) -> Self {
        match err {
            FilesError::Experience(err) => err.into(),
            FilesError::Io { .. } => Self::internal(err),
            FilesError::Parse { .. } | FilesError::Invalid { .. } => Self::invalid(err.to_string()),
        }
    }
}
