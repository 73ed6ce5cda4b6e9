//! Hot reload: a thread that polls the plugins directory and reloads what
//! changed, off the request path.
//!
//! Polling (not inotify) keeps it portable and cheap: each round stats a few
//! files per plugin. A changed folder is loaded like at start — compiled,
//! described, its test vectors run — and swapped in only if all of that
//! succeeds; calls in flight finish on the version they started with. A
//! folder that disappears unloads its plugin. When the grants file changes,
//! revocations apply at once and every plugin is reviewed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use crate::{LoadError, PluginHost};

/// What the watcher did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadEvent {
    /// A new or changed plugin is now serving.
    Loaded {
        /// Plugin id.
        id: String,
        /// Its version.
        version: String,
    },
    /// A changed folder did not load (or was held for approval); the
    /// previous version (if any) serves on.
    Rejected {
        /// The folder.
        folder: PathBuf,
        /// Why.
        error: LoadError,
    },
    /// A plugin's folder disappeared and it was unloaded.
    Removed {
        /// Plugin id.
        id: String,
    },
}

/// Marks the first load done when dropped.
struct FirstLoad<'a>(&'a tokio::sync::watch::Sender<bool>);

impl Drop for FirstLoad<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Stops the watcher when dropped.
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sizes and modification times of a plugin folder's files: any change in
/// them is a new version to load.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(folder: &Path) -> Fingerprint {
    let mut files = Vec::new();
    let mut visit = |dir: &Path| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                if let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    files.push((entry.path(), meta.len(), meta.modified().ok()));
                }
            }
        }
    };
    visit(folder);
    visit(&folder.join("tests"));
    files.sort();
    files
}

/// Plugin folders in `dir` by name (hidden ones are installs in progress:
/// scripts/build-plugins stages there).
pub(crate) fn folders(dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("plugin.toml").is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            (!name.starts_with('.')).then_some((name, p))
        })
        .collect()
}

impl PluginHost {
    /// Watches `dir` every `interval`, reloading changed plugins and
    /// unloading removed ones; each outcome is logged and sent to `events`
    /// (if given). The folders already present count as seen: load them
    /// first with [`PluginHost::load_dir`] (or use [`PluginHost::serve_dir`]).
    pub fn watch(
        self: &Arc<Self>,
        dir: PathBuf,
        interval: Duration,
        events: Option<mpsc::Sender<ReloadEvent>>,
    ) -> std::io::Result<Watcher> {
        let (stop, halt) = mpsc::channel::<()>();
        let host = Arc::clone(self);
        let seen = folders(&dir).into_iter().map(|(name, path)| (name, fingerprint(&path))).collect();
        let thread = std::thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || host.watch_loop(&dir, seen, interval, &halt, events.as_ref()))?;
        Ok(Watcher { stop: Some(stop), thread: Some(thread) })
    }

    /// Loads every plugin in `dir` on a thread of its own, then watches it
    /// like [`PluginHost::watch`]: serving never waits for a plugin to
    /// compile, describe itself or run its test vectors. Until the first
    /// load is done, [`PluginHost::loaded`] waits (requests for tools see
    /// every plugin that loads); each plugin's tools are published as it
    /// loads.
    pub fn serve_dir(self: &Arc<Self>, dir: PathBuf, interval: Duration) -> std::io::Result<Watcher> {
        let (stop, halt) = mpsc::channel::<()>();
        let host = Arc::clone(self);
        self.loading.send_replace(true);
        let spawned = std::thread::Builder::new().name("plugin-watch".into()).spawn(move || {
            // However the first load ends (a panic included), it has ended.
            let first_load = FirstLoad(&host.loading);
            // Fingerprints first: a change made while loading is seen later.
            let present = folders(&dir);
            let seen = present.iter().map(|(name, path)| (name.clone(), fingerprint(path))).collect();
            let (mut loaded, mut failed) = (0, 0);
            for folder in present.values() {
                // A shutdown does not wait for the rest.
                if let Err(mpsc::TryRecvError::Disconnected) = halt.try_recv() {
                    return;
                }
                match host.load_logged(folder) {
                    Ok(_) => loaded += 1,
                    Err(_) => failed += 1,
                }
            }
            drop(first_load);
            tracing::info!(loaded, failed, dir = %dir.display(), "plugins loaded");
            host.watch_loop(&dir, seen, interval, &halt, None);
        });
        match spawned {
            Ok(thread) => Ok(Watcher { stop: Some(stop), thread: Some(thread) }),
            Err(err) => {
                self.loading.send_replace(false);
                Err(err)
            }
        }
    }

    /// The watcher's rounds, until `halt` closes.
    fn watch_loop(
        &self,
        dir: &Path,
        mut seen: BTreeMap<String, Fingerprint>,
        interval: Duration,
        halt: &mpsc::Receiver<()>,
        events: Option<&mpsc::Sender<ReloadEvent>>,
    ) {
        let host = self;
        // Folders missing at the last poll: removed only if still missing at
        // the next, so replacing one by two renames never unloads it.
        let mut missing: Vec<String> = Vec::new();
        {
            let send = |event: ReloadEvent| {
                if let Some(events) = events {
                    let _ = events.send(event);
                }
            };
            // Each round waits `interval` for a stop (the channel closing).
            while let Err(mpsc::RecvTimeoutError::Timeout) = halt.recv_timeout(interval) {
                if host.grants().changed_on_disk() {
                    match host.grants().reload() {
                        Ok(()) => {
                            // Revocations apply at once; every plugin is
                            // then reviewed again (held ones may now load).
                            tracing::info!("plugin grants changed");
                            host.refresh_grants();
                            seen.clear();
                        }
                        Err(err) => tracing::warn!(error = %err, "plugin grants not reloaded; the previous ones stay"),
                    }
                }
                let current = folders(dir);
                for (name, folder) in &current {
                    let print = fingerprint(folder);
                    if seen.get(name) == Some(&print) {
                        continue;
                    }
                    seen.insert(name.clone(), print);
                    match host.load(folder) {
                        Ok((id, version)) => {
                            tracing::info!(plugin = %id, %version, "plugin reloaded");
                            send(ReloadEvent::Loaded { id, version });
                        }
                        Err(err) => {
                            tracing::warn!(folder = %folder.display(), error = %err, "new plugin version rejected; the previous one serves on");
                            send(ReloadEvent::Rejected { folder: folder.clone(), error: err });
                        }
                    }
                }
                let gone: Vec<String> = seen.keys().filter(|name| !current.contains_key(*name)).cloned().collect();
                let confirmed: Vec<String> = gone.iter().filter(|name| missing.contains(name)).cloned().collect();
                missing = gone;
                for name in confirmed {
                    seen.remove(&name);
                    if host.unload(&name) {
                        tracing::info!(plugin = %name, "plugin removed");
                        send(ReloadEvent::Removed { id: name });
                    }
                }
            }
        }
    }
}
