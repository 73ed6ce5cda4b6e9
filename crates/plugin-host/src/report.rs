//! What the host reports: a load's outcome, the plugins as listed, and a
//! plugin folder inspected for approval.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::LoadError;
use crate::grants::Approval;
use crate::manifest::{Capabilities, Manifest};

/// What [`PluginHost::load_dir`](crate::PluginHost::load_dir) did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Plugins now loaded: (id, version).
    pub loaded: Vec<(String, String)>,
    /// What did not load, with why: a plugin folder, or the grants file
    /// (a [`LoadError::Grants`] on a reload).
    pub failed: Vec<(PathBuf, LoadError)>,
}

/// A plugin as `engram plugins list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its id.
    pub id: String,
    /// The version serving (none if only a held version exists).
    pub version: Option<String>,
    /// The component's sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Its tools' published names.
    pub tools: Vec<String>,
    /// What its manifest requests.
    pub requested: Capabilities,
    /// What it holds: request ∩ grant.
    pub granted: Vec<String>,
    /// Requested but not granted.
    pub missing: Vec<String>,
    /// A newer version waiting for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldVersion>,
    /// What was last approved (by the operator, or automatically on first
    /// sight: `automatic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
}

/// A version waiting for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct HeldVersion {
    /// Its version.
    pub version: String,
    /// What it asks for beyond the approval.
    pub reasons: Vec<String>,
}

/// A plugin folder read and described but not loaded: what an operator
/// approves with `engram plugins grant`.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Its manifest.
    pub manifest: Manifest,
    /// Each tool's digest.
    pub digests: BTreeMap<String, String>,
    /// The component's sha256.
    pub sha256: String,
}
