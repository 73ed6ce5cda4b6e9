//! `plugin.toml`: who a plugin is, what it asks for, and its budgets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ManifestError;

/// Longest plugin id (tool names are `<id>.<tool>`, at most 48 characters).
pub const MAX_ID: usize = 24;

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name: lowercase letters, digits, `_` and `-`; the tool prefix.
    pub id: String,
    /// The plugin's own version (semver text).
    pub version: String,
    /// One line on what it is for.
    pub description: String,
    /// What it asks the operator for.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Limits for one call.
    #[serde(default)]
    pub budgets: Budgets,
}

/// Capabilities a plugin requests. Requests grant nothing: the operator does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Directories it wants to read (`read`) or read and write (`write`).
    #[serde(default)]
    pub files: Vec<FileAccess>,
    /// Hosts it wants to reach over HTTP(S), e.g. `api.example.com`.
    #[serde(default)]
    pub http: Vec<String>,
    /// Whether it wants to recall from the caller's memory.
    #[serde(default)]
    pub memory: bool,
}

/// A directory and how it may be used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccess {
    /// A name the operator maps to a real directory when granting.
    pub dir: String,
    /// `read` or `write`.
    pub mode: FileMode,
}

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Read only.
    Read,
    /// Read and write.
    Write,
}

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Wall-clock time for one call (instantiation included), in ms.
    #[serde(default = "Budgets::default_wall_ms")]
    pub wall_ms: u64,
    /// Linear memory, in MiB.
    #[serde(default = "Budgets::default_memory_mib")]
    pub memory_mib: u64,
}

impl Budgets {
    /// Largest wall budget a manifest may ask for.
    pub const MAX_WALL_MS: u64 = 60_000;
    /// Largest memory budget a manifest may ask for.
    pub const MAX_MEMORY_MIB: u64 = 1024;

    fn default_wall_ms() -> u64 {
        1_000
    }

    fn default_memory_mib() -> u64 {
        64
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Self { wall_ms: Self::default_wall_ms(), memory_mib: Self::default_memory_mib() }
    }
}

impl Manifest {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let path_buf = || path.to_path_buf();
        let text = std::fs::read_to_string(path)
            .map_err(|err| ManifestError::Unreadable { path: path_buf(), message: err.to_string() })?;
        let manifest: Self = toml::from_str(&text)
            .map_err(|err| ManifestError::Invalid { path: path_buf(), message: err.to_string() })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    fn check(&self, path: &Path) -> Result<(), ManifestError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_ID
            && self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(ManifestError::Id { path: path.to_path_buf(), id: self.id.clone() });
        }
        let budget =
            |budget: &str, max: u64| ManifestError::Budget { path: path.to_path_buf(), budget: budget.to_owned(), max };
        if !(1..=Budgets::MAX_WALL_MS).contains(&self.budgets.wall_ms) {
            return Err(budget("wall_ms", Budgets::MAX_WALL_MS));
        }
        if !(1..=Budgets::MAX_MEMORY_MIB).contains(&self.budgets.memory_mib) {
            return Err(budget("memory_mib", Budgets::MAX_MEMORY_MIB));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.toml");
        std::fs::write(&path, text).unwrap();
        Manifest::read(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn manifests_are_checked_and_errors_name_the_file_and_key() {
        let ok = parse("id = \"calc\"\nversion = \"0.1.0\"\ndescription = \"x\"\n").unwrap();
        assert_eq!(ok.budgets, Budgets::default());
        let err = parse("id = \"Calc!\"\nversion = \"0.1.0\"\ndescription = \"x\"\n").unwrap_err();
        assert!(err.contains("plugin.toml") && err.contains("`id`"), "{err}");
        let err = parse("id = \"a\"\nversion = \"1\"\ndescription = \"x\"\n[budgets]\nwall_ms = 0\n").unwrap_err();
        assert!(err.contains("budgets.wall_ms"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.toml");
        std::fs::write(&path, "id = \"a\"\nversion = \"1\"\ndescription = \"x\"\n[budgets]\nmemory_mib = 4096\n")
            .unwrap();
        let err = Manifest::read(&path).unwrap_err();
        assert_eq!(err, ManifestError::Budget { path: path.clone(), budget: "memory_mib".into(), max: 1024 });
        let err = Manifest::read(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(err, ManifestError::Unreadable { .. }), "{err:?}");
        let err = parse("id = \"a\"\nversion = \"1\"\ndescription = \"x\"\nshell = true\n").unwrap_err();
        assert!(err.contains("shell"), "{err}");
    }
}
