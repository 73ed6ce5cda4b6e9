//! The plugin contracts this host speaks, one module per released WIT
//! version (`wit/since_v<version>/` in the repository), each with an adapter
//! between its generated bindings and the host's own types below. The rest
//! of the host sees only these types, so supporting a new contract means a
//! new module beside the others, listed in [`Pre`], [`Instance`] and
//! [`add_to_linker`]; released ones never change.

pub(crate) mod since_v0_1_0;

use wasmtime::component::{InstancePre, Linker};
use wasmtime::{AsContextMut, Store};

use crate::error::ComponentError;
use crate::runtime::State;
use crate::tool::Annotations;

/// A tool as the plugin describes it, whatever its contract version.
pub(crate) struct Spec {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    pub input_schema: String,
    pub output_schema: Option<String>,
    pub annotations: Annotations,
}

/// Who is calling and within what limits.
pub(crate) struct CallContext {
    pub request_id: String,
    pub tenant: Option<String>,
    pub budget_ms: u64,
}

/// How a plugin said a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolFailure {
    /// It has no tool of that (local) name.
    UnknownTool(String),
    /// The arguments make no sense for the tool.
    InvalidArguments(String),
    /// The tool ran and could not produce a result.
    Failed(String),
}

/// A log message's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Adds the host interfaces of every supported contract to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    since_v0_1_0::add_to_linker(linker)
}

/// A component linked against one supported contract, ready to instantiate.
pub(crate) enum Pre {
    /// `engram:plugin@0.1.0`.
    V0_1_0(since_v0_1_0::PluginPre<State>),
}

impl Pre {
    /// The contract `pre` implements, newest first.
    pub(crate) fn new(pre: InstancePre<State>) -> Result<Self, ComponentError> {
        since_v0_1_0::PluginPre::new(pre)
            .map(Self::V0_1_0)
            .map_err(|err| ComponentError::NotAPlugin { message: format!("{err:#}") })
    }

    /// A fresh instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Instance> {
        match self {
            Self::V0_1_0(pre) => pre.instantiate(store).map(Instance::V0_1_0),
        }
    }
}

/// A live plugin instance.
pub(crate) enum Instance {
    /// `engram:plugin@0.1.0`.
    V0_1_0(since_v0_1_0::Plugin),
}

impl Instance {
    /// The plugin's tools.
    pub(crate) fn describe(&self, store: impl AsContextMut<Data = State>) -> wasmtime::Result<Vec<Spec>> {
        match self {
            Self::V0_1_0(plugin) => since_v0_1_0::describe(plugin, store),
        }
    }

    /// Runs tool `tool` with `arguments` (JSON text): its result (JSON
    /// text) or its failure; `Err` for a trap.
    pub(crate) fn call(
        &self,
        store: impl AsContextMut<Data = State>,
        context: &CallContext,
        tool: &str,
        arguments: &str,
    ) -> wasmtime::Result<Result<String, ToolFailure>> {
        match self {
            Self::V0_1_0(plugin) => since_v0_1_0::call(plugin, store, context, tool, arguments),
        }
    }
}
