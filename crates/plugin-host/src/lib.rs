//! Engram's plugin host: expert tools as WebAssembly components.
//!
//! One wasmtime `Engine` (Cranelift, pooling allocator, epoch
//! interruption) compiles each component once — cached on disk by its
//! sha256 and the engine's compatibility hash — and keeps an `InstancePre`
//! per plugin version. Every call gets a fresh `Store`: its wall budget is
//! an epoch deadline set before instantiation (a 500 µs ticker advances the
//! epoch), its memory budget a resource limiter, its WASI context denies
//! everything (no environment, no files, no sockets) and its stdout/stderr
//! go, bounded, to the log. Arguments and results are validated against
//! the tools' JSON Schemas; budget overruns come back as structured errors.
//!
//! Capabilities beyond that — directories, outgoing HTTP through the host,
//! recall from memory — are requested in the manifest and granted by the
//! operator ([`grants`]); an upgrade that asks for more or changes a tool's
//! description is held until approved again.
//!
//! Layout of a plugins directory: one folder per plugin holding
//! `plugin.toml` ([`manifest`]), the component (`<id>.wasm`) and optional
//! test vectors (`tests/*.json`) that must pass before the plugin loads.
//!
//! Modules: `host` (load, list, call), `approve` (grant, revoke, list
//! plugins), `vectors` (test vectors), `tool` (published tools and their
//! schemas), `report`, `error`, `recall`, `runtime` (wasmtime: engine,
//! cache, sandboxed stores), `wit` (one adapter per supported contract
//! version in `wit/since_v*/`), `net` (outgoing HTTP) and `watch` (hot
//! reload).

mod approve;
mod error;
pub mod grants;
mod host;
pub mod manifest;
mod net;
mod offload;
mod quota;
mod recall;
mod report;
mod runtime;
mod tool;
mod vectors;
mod watch;
mod wit;

pub use error::{
    ApproveError, CallError, ComponentError, GrantsError, HostError, LoadError, ManifestError, SchemaRole,
};
pub use grants::{Capability, PrivateAddresses, PrivateHosts, Revocation};
pub use host::{LOAD_WAIT, PLUGIN_CALLS, PluginHost};
pub use manifest::{Budgets, Capabilities, Manifest};
pub use recall::{Hit, Recall, Scope};
pub use report::{HeldVersion, Inspection, LoadReport, PluginInfo};
pub use tool::{Annotations, MAX_DESCRIPTION, MAX_TOOL_NAME, ToolInfo};
pub use watch::{ReloadEvent, Watcher};
