//! Grants: what the operator lets each plugin do, and which version of its
//! requests and tool descriptions they approved.
//!
//! A manifest only *requests* capabilities; a plugin gets the intersection
//! of its request and its grant. Grants live in one TOML file (by default
//! `<data dir>/plugin-grants.toml`), one table per plugin id, that the
//! operator edits by hand or with `engram plugins grant|revoke`, plus any
//! declared in Engram's configuration (`[plugins.grants.<id>]`, added to the
//! file's); nothing a model says reaches either. The same table records the approval: the
//! capabilities the plugin requested and a digest of each tool's
//! description and schemas when it was approved (or first seen). A later
//! version that requests more, or adds or changes a tool, is *held* — the
//! approved version serves on — until the operator approves it again.
//!
//! ```toml
//! [weather]
//! memory = false
//! http = ["api.weather.gov"]
//! files = { cache = { path = "/srv/weather", mode = "write" } }
//!
//! [weather.approved]
//! version = "0.2.0"
//! request = { http = ["api.weather.gov"], files = [{ dir = "cache", mode = "write" }] }
//! tools = { "weather.forecast" = "5d0c2b6a9e1f7a43" }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::GrantsError;
use crate::manifest::{Budgets, Capabilities, FileMode};
use crate::net::HostGrant;

/// What the operator granted one plugin, and what they approved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Recall from the caller's memory.
    #[serde(default)]
    pub memory: bool,
    /// Hosts (`name` or `name:port`) it may reach through the host's HTTP hook.
    #[serde(default)]
    pub http: Vec<String>,
    /// Which granted hosts may resolve to loopback or private addresses (a
    /// service on this machine or network): `true` (all), `false`, or a list
    /// of them. Link-local and cloud metadata addresses stay refused.
    #[serde(default)]
    pub http_private: PrivateHosts,
    /// HTTP requests one call may send.
    #[serde(default = "Grant::default_http_requests")]
    pub http_requests: u32,
    /// Bytes one call may send and receive over HTTP, bodies together.
    #[serde(default = "Grant::default_http_bytes")]
    pub http_bytes: u64,
    /// Directories, by the name the manifest requests them under.
    #[serde(default)]
    pub files: BTreeMap<String, FileGrant>,
    /// The approved version: what it requested and its tools' digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
}

impl Grant {
    fn default_http_requests() -> u32 {
        16
    }

    fn default_http_bytes() -> u64 {
        4 << 20
    }

    /// A grant of nothing, with the default quotas.
    pub fn none() -> Self {
        Self { http_requests: Self::default_http_requests(), http_bytes: Self::default_http_bytes(), ..Self::default() }
    }
}

pub use engram_config::PrivateHosts;

/// What the operator allows when approving: which of a plugin's requested
/// HTTP hosts may resolve to loopback or private addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PrivateAddresses {
    /// Public addresses only.
    #[default]
    Refused,
    /// Loopback and private addresses too, for every requested host.
    Allowed,
    /// For these requested hosts only.
    Only(Vec<String>),
}

impl PrivateAddresses {
    /// The grant's `http_private` for this choice.
    pub fn grant(&self) -> PrivateHosts {
        match self {
            Self::Refused => PrivateHosts::Every(false),
            Self::Allowed => PrivateHosts::Every(true),
            Self::Only(hosts) => PrivateHosts::Only(hosts.clone()),
        }
    }
}

/// One capability a grant can hold, by what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Recall from the caller's memory.
    Memory,
    /// One HTTP host (`name` or `name:port`), matched case-insensitively.
    Http(String),
    /// One directory, by the name the manifest requests it under.
    Directory(String),
}

/// What [`Grants::revoke`] takes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Everything: memory, every host (and private addresses), every directory.
    All,
    /// Only these capabilities; the others stay.
    Only(Vec<Capability>),
}

impl Revocation {
    /// Takes back what this names from `grant`, keeping its approval and quotas.
    pub fn apply(&self, grant: &mut Grant) {
        match self {
            Self::All => {
                grant.memory = false;
                grant.http.clear();
                grant.http_private = PrivateHosts::Every(false);
                grant.files.clear();
            }
            Self::Only(capabilities) => {
                for capability in capabilities {
                    match capability {
                        Capability::Memory => grant.memory = false,
                        Capability::Http(host) => {
                            // A bare host takes back every port of it.
                            let named = host.to_ascii_lowercase();
                            let target = HostGrant::parse(&named);
                            let every_port = target.host == named.trim_start_matches('[').trim_end_matches(']');
                            let revoked = |h: &String| {
                                let h = h.to_ascii_lowercase();
                                h == named || (every_port && HostGrant::parse(&h).host == target.host)
                            };
                            grant.http.retain(|h| !revoked(h));
                            if let PrivateHosts::Only(hosts) = &mut grant.http_private {
                                hosts.retain(|h| !revoked(h));
                            }
                        }
                        Capability::Directory(name) => {
                            grant.files.remove(name);
                        }
                    }
                }
            }
        }
    }
}

/// A real directory behind a requested name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// The directory on this machine.
    pub path: PathBuf,
    /// `read` or `write`; the plugin gets the lesser of this and its request.
    pub mode: FileMode,
    /// For `write`: most MiB the directory may hold (default
    /// [`FileGrant::DEFAULT_QUOTA_MIB`]). Measured when each call starts; a
    /// call gets it read-only once it is full, and may write only what is
    /// left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mib: Option<u64>,
}

impl FileGrant {
    /// The quota of a `write` grant that names none.
    pub const DEFAULT_QUOTA_MIB: u64 = 1024;

    /// The quota, in bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.quota_mib.unwrap_or(Self::DEFAULT_QUOTA_MIB).saturating_mul(1 << 20)
    }
}

/// A plugin version the operator approved (or that was first seen).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The plugin's version.
    pub version: String,
    /// The capabilities it requested.
    #[serde(default)]
    pub request: Capabilities,
    /// Each tool's digest (description, title, schemas, annotations).
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// The budgets it runs with (none in approvals recorded before budgets
    /// were: any budget is within them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    /// The sha256 of the component approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Approved by no one: the plugin was first seen in the plugins
    /// directory and loaded with nothing granted, or this build replaced
    /// the one approved without asking for more. `engram plugins list`
    /// says so until the operator approves it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automatic: bool,
}

impl Approval {
    /// Why a version requesting `request` with `budgets` and tools `tools`
    /// is not covered by this approval; empty if it is.
    pub fn review(&self, request: &Capabilities, budgets: &Budgets, tools: &BTreeMap<String, String>) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(approved) = &self.budgets {
            if budgets.wall_ms > approved.wall_ms {
                reasons.push(format!("raises its `wall_ms` budget from {} to {}", approved.wall_ms, budgets.wall_ms));
            }
            if budgets.memory_mib > approved.memory_mib {
                let (from, to) = (approved.memory_mib, budgets.memory_mib);
                reasons.push(format!("raises its `memory_mib` budget from {from} to {to}"));
            }
        }
        if request.memory && !self.request.memory {
            reasons.push("requests `memory`".to_owned());
        }
        for host in &request.http {
            if !self.request.http.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                reasons.push(format!("requests HTTP host `{host}`"));
            }
        }
        for access in &request.files {
            let approved = self.request.files.iter().find(|a| a.dir == access.dir).map(|a| a.mode);
            if approved.is_none_or(|mode| mode < access.mode) {
                reasons.push(format!("requests directory `{}` ({})", access.dir, mode_name(access.mode)));
            }
        }
        for (name, digest) in tools {
            match self.tools.get(name) {
                None => reasons.push(format!("adds tool `{name}`")),
                Some(approved) if approved != digest => reasons.push(format!("changes the description of `{name}`")),
                Some(_) => {}
            }
        }
        reasons
    }
}

/// The grants of every plugin: read from a file (or kept in memory), and
/// written back whole, under a lock, when they change.
pub struct Grants {
    file: Option<PathBuf>,
    state: Mutex<State>,
    /// Grants from the configuration, added to the file's.
    config: BTreeMap<String, Grant>,
    /// Engram's own paths, which no directory grant may overlap.
    protected: Vec<PathBuf>,
    /// Bumped before every change of the grants in force.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    grants: BTreeMap<String, Grant>,
    /// Length and mtime of the file as last read or written.
    seen: Option<(u64, Option<SystemTime>)>,
}

const HEADER: &str = "\
# Engram plugin grants: one table per plugin id. `engram plugins grant` and
# `engram plugins revoke` edit this file; so may you (the daemon rereads it).
# A plugin gets what its plugin.toml requests AND this file grants.
";

impl Grants {
    /// Grants kept in memory only (tests, `engram plugins test`).
    pub fn in_memory() -> Self {
        Self {
            file: None,
            state: Mutex::new(State::default()),
            config: BTreeMap::new(),
            protected: Vec::new(),
            generation: Default::default(),
        }
    }

    /// Grants in `file` (which need not exist yet).
    pub fn open(file: PathBuf) -> Result<Self, GrantsError> {
        let grants = Self {
            file: Some(file),
            state: Mutex::new(State::default()),
            config: BTreeMap::new(),
            protected: Vec::new(),
            generation: Default::default(),
        };
        grants.reload()?;
        Ok(grants)
    }

    /// Adds grants declared in the configuration (approvals in them are
    /// ignored: only the file records what was approved).
    pub fn with_config(mut self, config: BTreeMap<String, Grant>) -> Self {
        self.config = config.into_iter().map(|(id, grant)| (id, Grant { approved: None, ..grant })).collect();
        self
    }

    /// Protects Engram's own `paths` (data, cache, plugins directories, the
    /// grants and token files): a directory grant overlapping one of them
    /// is refused when approved and dropped (with a warning) if written
    /// into the file or configuration by hand. The grants file itself is
    /// always protected.
    pub fn protecting(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.protected.extend(paths);
        self
    }

    /// The protected path `dir` overlaps (contains, or lies within), if any.
    pub fn overlaps_protected(&self, dir: &Path) -> Option<PathBuf> {
        let real = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let dir = real(dir);
        self.protected
            .iter()
            .chain(self.file.as_ref())
            .map(|p| real(p))
            .find(|p| p.starts_with(&dir) || dir.starts_with(p))
    }

    /// A counter that moves before every change of the grants in force:
    /// what was computed from [`Grants::get`] at one value is current as
    /// long as it has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changing(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// What the configuration grants plugin `id`, if anything.
    pub fn from_config(&self, id: &str) -> Option<&Grant> {
        self.config.get(id)
    }

    /// The file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Rereads the file. On error the grants in force stay as they were
    /// (and this version of the file counts as seen).
    pub fn reload(&self) -> Result<(), GrantsError> {
        let Some(file) = &self.file else { return Ok(()) };
        let read = read(file);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok((grants, seen)) => {
                self.changing();
                *state = State { grants, seen }
            }
            Err(err) => {
                state.seen = stamp(file);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Whether the file changed since it was last read or written here.
    pub fn changed_on_disk(&self) -> bool {
        let Some(file) = &self.file else { return false };
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        stamp(file) != state.seen
    }

    /// Plugin `id`'s grant: the file's and the configuration's together
    /// (nothing granted if neither has a table for it).
    pub fn get(&self, id: &str) -> Grant {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut grant = state.grants.get(id).cloned().unwrap_or_else(Grant::none);
        if let Some(extra) = self.config.get(id) {
            grant.memory |= extra.memory;
            for host in &extra.http {
                if !grant.http.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                    grant.http.push(host.clone());
                }
            }
            grant.http_private.merge(&extra.http_private);
            grant.http_requests = grant.http_requests.max(extra.http_requests);
            grant.http_bytes = grant.http_bytes.max(extra.http_bytes);
            for (name, dir) in &extra.files {
                grant.files.entry(name.clone()).or_insert_with(|| dir.clone());
            }
        }
        grant.files.retain(|name, dir| match self.overlaps_protected(&dir.path) {
            Some(protected) => {
                tracing::warn!(
                    plugin = id,
                    dir = name,
                    path = %dir.path.display(),
                    protected = %protected.display(),
                    "directory grant refused: it overlaps Engram's own files"
                );
                false
            }
            None => true,
        });
        grant
    }

    /// Changes plugin `id`'s grant with `change` and saves the file: under
    /// an exclusive lock, from the file's current content, replaced whole.
    pub fn update<R>(&self, id: &str, change: impl FnOnce(&mut Grant) -> R) -> Result<R, GrantsError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.changing();
        let Some(file) = &self.file else {
            return Ok(change(state.grants.entry(id.to_owned()).or_insert_with(Grant::none)));
        };
        let _lock = lock(file)?;
        let (mut grants, _) = read(file)?;
        let result = change(grants.entry(id.to_owned()).or_insert_with(Grant::none));
        let text = toml::to_string(&grants).map_err(|err| GrantsError::Encode { message: err.to_string() })?;
        let partial = file.with_extension(format!("toml.{}.partial", std::process::id()));
        let written = File::create(&partial)
            .and_then(|mut f| {
                f.write_all(HEADER.as_bytes())?;
                f.write_all(b"\n")?;
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&partial, file));
        written.map_err(|err| GrantsError::Write { path: file.clone(), message: err.to_string() })?;
        *state = State { grants, seen: stamp(file) };
        Ok(result)
    }
}

impl Grants {
    /// Takes back what `revocation` names from plugin `id`'s grant, keeping
    /// its approval; saved. Returns the grant left.
    pub fn revoke(&self, id: &str, revocation: &Revocation) -> Result<Grant, GrantsError> {
        self.update(id, |grant| {
            revocation.apply(grant);
            grant.clone()
        })
    }
}

fn stamp(file: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(file).ok().map(|m| (m.len(), m.modified().ok()))
}

type Read = (BTreeMap<String, Grant>, Option<(u64, Option<SystemTime>)>);

fn read(file: &Path) -> Result<Read, GrantsError> {
    let seen = stamp(file);
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((BTreeMap::new(), None)),
        Err(err) => return Err(GrantsError::Unreadable { file: file.to_path_buf(), message: err.to_string() }),
    };
    let grants: BTreeMap<String, Grant> = toml::from_str(&text)
        .map_err(|err| GrantsError::Invalid { file: file.to_path_buf(), message: err.to_string() })?;
    for (id, grant) in &grants {
        for (name, dir) in &grant.files {
            if !dir.path.is_absolute() {
                return Err(GrantsError::RelativePath {
                    file: file.to_path_buf(),
                    id: id.clone(),
                    dir: name.clone(),
                    path: dir.path.clone(),
                });
            }
        }
    }
    Ok((grants, seen))
}

/// An exclusive lock on `<file>.lock`, so the daemon and the CLI never
/// interleave a read-modify-write.
fn lock(file: &Path) -> Result<File, GrantsError> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|err| GrantsError::CreateDir { path: parent.to_path_buf(), message: err.to_string() })?;
    }
    let path = file.with_extension("toml.lock");
    let locked = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|handle| handle.lock().map(|()| handle));
    locked.map_err(|err| GrantsError::Lock { path, message: err.to_string() })
}

/// A directory a loaded version may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantedDir {
    /// Where the guest sees it (`/<name>`).
    pub guest: String,
    /// The directory on this machine.
    pub host: PathBuf,
    pub mode: FileMode,
    /// Bytes it may hold (for `write`).
    pub quota: u64,
}

/// What one loaded version may use: its request ∩ its grant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effective {
    /// Granted directories.
    pub files: Vec<GrantedDir>,
    /// Hosts it may reach; empty: no HTTP.
    pub http: Vec<String>,
    pub http_private: PrivateHosts,
    pub http_requests: u32,
    pub http_bytes: u64,
    pub memory: bool,
    /// Requested but not granted, for listings.
    pub missing: Vec<String>,
}

impl Effective {
    pub(crate) fn of(request: &Capabilities, grant: &Grant) -> Self {
        let mut effective = Self {
            http_private: grant.http_private.clone(),
            http_requests: grant.http_requests,
            http_bytes: grant.http_bytes,
            memory: request.memory && grant.memory,
            ..Self::default()
        };
        if request.memory && !grant.memory {
            effective.missing.push("memory".to_owned());
        }
        for host in &request.http {
            if grant.http.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                effective.http.push(host.to_ascii_lowercase());
            } else {
                effective.missing.push(format!("http {host}"));
            }
        }
        for access in &request.files {
            match grant.files.get(&access.dir) {
                Some(dir) => effective.files.push(GrantedDir {
                    guest: format!("/{}", access.dir),
                    host: dir.path.clone(),
                    mode: access.mode.min(dir.mode),
                    quota: dir.quota_bytes(),
                }),
                None => effective.missing.push(format!("files {}", access.dir)),
            }
        }
        effective
    }

    /// What it holds, for listings: `memory`, `http HOST`, `files NAME=PATH (mode)`.
    pub(crate) fn granted(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.memory {
            out.push("memory".to_owned());
        }
        out.extend(self.http.iter().map(|h| format!("http {h}")));
        out.extend(self.files.iter().map(|dir| {
            format!("files {}={} ({})", dir.guest.trim_start_matches('/'), dir.host.display(), mode_name(dir.mode))
        }));
        out
    }
}

fn mode_name(mode: FileMode) -> &'static str {
    match mode {
        FileMode::Read => "read",
        FileMode::Write => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileAccess;

    fn request(http: &[&str], memory: bool, files: &[(&str, FileMode)]) -> Capabilities {
        Capabilities {
            http: http.iter().map(|h| (*h).to_owned()).collect(),
            memory,
            files: files.iter().map(|(dir, mode)| FileAccess { dir: (*dir).to_owned(), mode: *mode }).collect(),
        }
    }

    #[test]
    fn a_plugin_gets_its_request_and_grant_intersected() {
        let mut grant = Grant::none();
        grant.http = vec!["API.example.com".into(), "other.org".into()];
        grant
            .files
            .insert("data".into(), FileGrant { path: "/srv/data".into(), mode: FileMode::Read, quota_mib: None });
        let effective =
            Effective::of(&request(&["api.example.com", "x.io"], true, &[("data", FileMode::Write)]), &grant);
        assert_eq!(effective.http, ["api.example.com"]);
        assert!(!effective.memory);
        let data = GrantedDir {
            guest: "/data".to_owned(),
            host: PathBuf::from("/srv/data"),
            mode: FileMode::Read,
            quota: 1024 << 20,
        };
        assert_eq!(effective.files, [data]);
        assert_eq!(effective.missing, ["memory", "http x.io"]);
    }

    #[test]
    fn widening_and_new_descriptions_are_named() {
        let approval = Approval {
            version: "1.0.0".into(),
            request: request(&["a.com"], false, &[("data", FileMode::Read)]),
            tools: BTreeMap::from([("p.t".to_owned(), "aaaa".to_owned())]),
            budgets: Some(Budgets::default()),
            sha256: None,
            automatic: false,
        };
        let same = BTreeMap::from([("p.t".to_owned(), "aaaa".to_owned())]);
        let budgets = Budgets::default();
        assert!(approval.review(&request(&["A.com"], false, &[("data", FileMode::Read)]), &budgets, &same).is_empty());
        let narrow = Budgets { wall_ms: 10, memory_mib: 1 };
        assert!(approval.review(&request(&[], false, &[]), &narrow, &BTreeMap::new()).is_empty(), "narrowing is fine");
        let changed = BTreeMap::from([("p.t".to_owned(), "bbbb".to_owned()), ("p.u".to_owned(), "cccc".to_owned())]);
        let raised = Budgets { wall_ms: 60_000, memory_mib: 1024 };
        let reasons =
            approval.review(&request(&["a.com", "b.com"], true, &[("data", FileMode::Write)]), &raised, &changed);
        assert_eq!(
            reasons,
            [
                "raises its `wall_ms` budget from 1000 to 60000",
                "raises its `memory_mib` budget from 64 to 1024",
                "requests `memory`",
                "requests HTTP host `b.com`",
                "requests directory `data` (write)",
                "changes the description of `p.t`",
                "adds tool `p.u`"
            ]
        );
    }

    #[test]
    fn private_addresses_are_allowed_per_host() {
        let read = |text: &str| toml::from_str::<Grant>(text).unwrap().http_private;
        assert_eq!(read(""), PrivateHosts::Every(false));
        assert_eq!(read("http_private = true"), PrivateHosts::Every(true));
        let only = read("http = [\"localhost:*\", \"api.example.com\"]\nhttp_private = [\"LocalHost:*\"]");
        let allows = crate::net::private_allowed;
        assert!(allows(&only, "localhost") && !allows(&only, "api.example.com") && only.any());
        assert!(allows(&PrivateHosts::Only(vec!["[::1]:8080".into()]), "::1"));
        let mut merged = PrivateHosts::Every(false);
        merged.merge(&only);
        assert_eq!(merged, only);
        merged.merge(&PrivateHosts::Only(vec!["b.com".into(), "localhost:*".into()]));
        assert_eq!(merged, PrivateHosts::Only(vec!["LocalHost:*".into(), "b.com".into()]));
        merged.merge(&PrivateHosts::Every(true));
        assert_eq!(merged, PrivateHosts::Every(true));
        let text = toml::to_string(&Grant { http_private: only.clone(), ..Grant::none() }).unwrap();
        assert!(text.contains("http_private = [\"LocalHost:*\"]"), "{text}");
    }

    #[test]
    fn the_file_round_trips_and_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin-grants.toml");
        let grants = Grants::open(path.clone()).unwrap();
        assert_eq!(grants.get("calc"), Grant::none());
        grants
            .update("calc", |g| {
                g.memory = true;
                g.files
                    .insert("data".into(), FileGrant { path: "/srv".into(), mode: FileMode::Write, quota_mib: None });
                g.approved = Some(Approval {
                    version: "0.1.0".into(),
                    request: request(&["a.com"], true, &[]),
                    tools: BTreeMap::from([("calc.x".to_owned(), "00ff".to_owned())]),
                    budgets: Some(Budgets { wall_ms: 5000, memory_mib: 128 }),
                    sha256: Some("ab".repeat(32)),
                    automatic: true,
                });
            })
            .unwrap();
        assert!(!grants.changed_on_disk(), "its own write is not a change");
        let again = Grants::open(path.clone()).unwrap();
        assert_eq!(again.get("calc"), grants.get("calc"));
        std::fs::write(&path, "[calc]\nmemroy = true\n").unwrap();
        assert!(grants.changed_on_disk());
        let err = grants.reload().unwrap_err();
        assert!(matches!(err, GrantsError::Invalid { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("plugin-grants.toml") && err.contains("memroy"), "{err}");
        assert!(grants.get("calc").memory, "a bad file leaves the grants in force");
        let mut declared = Grant::none();
        declared.http = vec!["api.example.com".into()];
        declared
            .files
            .insert("data".into(), FileGrant { path: "/elsewhere".into(), mode: FileMode::Read, quota_mib: None });
        let grants = grants.with_config(BTreeMap::from([("calc".to_owned(), declared)]));
        let merged = grants.get("calc");
        assert_eq!((merged.memory, merged.http.as_slice()), (true, ["api.example.com".to_owned()].as_slice()));
        assert_eq!(merged.files["data"].path, PathBuf::from("/srv"), "the file's mapping wins");
        std::fs::write(&path, "[calc.files.data]\npath = \"rel\"\nmode = \"read\"\n").unwrap();
        let err = grants.reload().unwrap_err();
        assert!(matches!(&err, GrantsError::RelativePath { id, dir, .. } if id == "calc" && dir == "data"), "{err:?}");
        assert!(err.to_string().contains("calc.files.data.path"), "{err}");
    }

    #[test]
    fn a_revocation_takes_back_what_it_names_or_everything() {
        let mut full = Grant::none();
        full.memory = true;
        full.http = vec!["A.com".into(), "a.com:8080".into(), "b.com".into(), "b.com:*".into()];
        full.http_private = PrivateHosts::Only(vec!["A.com".into(), "b.com".into()]);
        full.files.insert("data".into(), FileGrant { path: "/srv".into(), mode: FileMode::Read, quota_mib: None });
        full.files.insert("cache".into(), FileGrant { path: "/tmp".into(), mode: FileMode::Write, quota_mib: None });
        let mut grant = full.clone();
        Revocation::Only(vec![Capability::Http("a.com".into()), Capability::Directory("cache".into())])
            .apply(&mut grant);
        assert_eq!(
            (grant.memory, grant.http.as_slice(), &grant.http_private),
            (true, ["b.com".to_owned(), "b.com:*".to_owned()].as_slice(), &PrivateHosts::Only(vec!["b.com".into()]))
        );
        // A host with a port takes back that entry only.
        let mut ported = grant.clone();
        Revocation::Only(vec![Capability::Http("b.com:*".into())]).apply(&mut ported);
        assert_eq!(ported.http, ["b.com"]);
        assert_eq!(grant.files.keys().collect::<Vec<_>>(), ["data"]);
        Revocation::Only(vec![Capability::Memory]).apply(&mut grant);
        assert!(!grant.memory && grant.http == ["b.com", "b.com:*"]);
        let mut grant = full.clone();
        Revocation::Only(Vec::new()).apply(&mut grant);
        assert_eq!(grant, full, "naming nothing takes nothing");
        Revocation::All.apply(&mut grant);
        assert_eq!(grant, Grant { approved: full.approved.clone(), ..Grant::none() });
    }
}
