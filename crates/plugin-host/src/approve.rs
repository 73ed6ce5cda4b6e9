//! The operator's side of a host: approving a plugin folder, revoking
//! grants, rereading them, and listing every plugin with what it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ApproveError, LoadError};
use crate::grants::{Approval, Effective, FileGrant, Grant, PrivateAddresses, Revocation};
use crate::host::{PluginHost, Prepared};
use crate::report::{Inspection, LoadReport, PluginInfo};

impl PluginHost {
    /// Rereads the grants (applying revocations to the loaded plugins at
    /// once), then reloads every plugin in `dir`, held ones included. A bad
    /// grants file is reported first in `failed` (as [`LoadError::Grants`],
    /// under the file's path) and the grants in force stay.
    pub fn reload(&self, dir: &Path) -> LoadReport {
        let mut failed = Vec::new();
        if let Err(err) = self.grants.reload() {
            tracing::warn!(error = %err, "grants not reloaded; the previous ones stay in force");
            failed.push((self.grants.file().map(Path::to_path_buf).unwrap_or_default(), LoadError::Grants(err)));
        }
        self.refresh_grants();
        let mut report = self.load_dir(dir);
        report.failed.splice(0..0, failed);
        report
    }

    /// Recomputes what each loaded plugin may use from the grants in force.
    pub fn refresh_grants(&self) {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        for (id, loaded) in plugins.iter() {
            let effective = Effective::of(&loaded.manifest.capabilities, &self.grants.get(id));
            *loaded.effective.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(effective);
        }
    }

    /// Every plugin, loaded or held, with its grants.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, PluginInfo> = BTreeMap::new();
        for (id, loaded) in plugins.iter() {
            let effective = loaded.effective();
            out.insert(
                id.clone(),
                PluginInfo {
                    id: id.clone(),
                    version: Some(loaded.manifest.version.clone()),
                    sha256: Some(loaded.sha256.clone()),
                    tools: loaded.tools.keys().cloned().collect(),
                    requested: loaded.manifest.capabilities.clone(),
                    granted: effective.granted(),
                    missing: effective.missing.clone(),
                    held: None,
                    approved: self.grants.get(id).approved,
                },
            );
        }
        for (id, (manifest, version)) in held.iter() {
            let entry = out.entry(id.clone()).or_insert_with(|| {
                let effective = Effective::of(&manifest.capabilities, &self.grants.get(id));
                PluginInfo {
                    id: id.clone(),
                    version: None,
                    sha256: None,
                    tools: Vec::new(),
                    requested: manifest.capabilities.clone(),
                    granted: effective.granted(),
                    missing: effective.missing,
                    held: None,
                    approved: self.grants.get(id).approved,
                }
            });
            entry.held = Some(version.clone());
        }
        out.into_values().collect()
    }

    /// Reads and describes the plugin in `folder` without loading it.
    pub fn inspect(&self, folder: &Path) -> Result<Inspection, LoadError> {
        let Prepared { manifest, digests, sha256, .. } = self.prepare(folder)?;
        Ok(Inspection { manifest, digests, sha256 })
    }

    /// Approves the plugin in `folder` as it is now — its requested
    /// capabilities and tool descriptions — and grants everything it
    /// requests: each requested directory must be mapped in `dirs` (name →
    /// absolute path); `private` says whether its hosts may be loopback or
    /// private addresses. Saved in the grants; call [`PluginHost::reload`]
    /// to apply.
    pub fn approve(
        &self,
        folder: &Path,
        dirs: &BTreeMap<String, PathBuf>,
        private: PrivateAddresses,
    ) -> Result<Grant, ApproveError> {
        let Inspection { manifest, digests, sha256 } = self.inspect(folder)?;
        let request = &manifest.capabilities;
        let mut files = BTreeMap::new();
        for access in &request.files {
            let path = dirs
                .get(&access.dir)
                .ok_or_else(|| ApproveError::UnmappedDirectory { id: manifest.id.clone(), dir: access.dir.clone() })?;
            if !path.is_absolute() || !path.is_dir() {
                return Err(ApproveError::NotADirectory { dir: access.dir.clone(), path: path.clone() });
            }
            if let Some(protected) = self.grants.overlaps_protected(path) {
                return Err(ApproveError::ProtectedDirectory {
                    dir: access.dir.clone(),
                    path: path.clone(),
                    protected,
                });
            }
            files.insert(access.dir.clone(), FileGrant { path: path.clone(), mode: access.mode, quota_mib: None });
        }
        if let PrivateAddresses::Only(hosts) = &private
            && let Some(unknown) = hosts.iter().find(|host| !request.http.iter().any(|h| h.eq_ignore_ascii_case(host)))
        {
            return Err(ApproveError::UnknownHost { id: manifest.id.clone(), host: unknown.clone() });
        }
        if let Some(unknown) = dirs.keys().find(|name| !request.files.iter().any(|a| &a.dir == *name)) {
            return Err(ApproveError::UnknownDirectory { id: manifest.id.clone(), dir: unknown.clone() });
        }
        let grant = self.grants.update(&manifest.id, |grant| {
            // A quota the operator set for a directory stays.
            for (name, dir) in &mut files {
                dir.quota_mib = grant.files.get(name).and_then(|old| old.quota_mib);
            }
            grant.memory = request.memory;
            grant.http = request.http.clone();
            grant.http_private = private.grant();
            grant.files = files;
            grant.approved = Some(Approval {
                version: manifest.version.clone(),
                request: request.clone(),
                tools: digests,
                budgets: Some(manifest.budgets),
                sha256: Some(sha256),
                automatic: false,
            });
            grant.clone()
        })?;
        Ok(grant)
    }

    /// Takes back what `revocation` names from plugin `id`'s grant, keeping
    /// its approval; saved, and applied to the loaded plugin now. Returns
    /// the grant left.
    pub fn revoke(&self, id: &str, revocation: &Revocation) -> Result<Grant, crate::error::GrantsError> {
        let grant = self.grants.revoke(id, revocation)?;
        self.refresh_grants();
        Ok(grant)
    }
}
