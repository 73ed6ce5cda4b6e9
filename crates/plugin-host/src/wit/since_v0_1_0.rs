//! `engram:plugin@0.1.0` (`wit/since_v0.1.0/plugin.wit`): its generated
//! bindings and the adapter to the host's own types. Released: never
//! changes.

use wasmtime::AsContextMut;
use wasmtime::component::{HasSelf, Linker};

// Not `CallContext`: the generated bindings define one at this level.
use super::{LogLevel, Spec, ToolFailure};
use crate::net;
use crate::recall::Hit;
use crate::runtime::State;
use crate::tool::Annotations;

wasmtime::component::bindgen!({ path: "../../wit/since_v0.1.0", world: "plugin" });

use engram::plugin::{http, log, memory, progress, types};

/// Adds this contract's host interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    Plugin::add_to_linker::<State, HasSelf<State>>(linker, |state| state)
}

/// The plugin's tools, in the host's terms.
pub(crate) fn describe(plugin: &Plugin, store: impl AsContextMut<Data = State>) -> wasmtime::Result<Vec<Spec>> {
    Ok(plugin.call_describe(store)?.into_iter().map(spec).collect())
}

/// One call, in the host's terms.
pub(crate) fn call(
    plugin: &Plugin,
    store: impl AsContextMut<Data = State>,
    context: &super::CallContext,
    tool: &str,
    arguments: &str,
) -> wasmtime::Result<Result<String, ToolFailure>> {
    let context = types::CallContext {
        request_id: context.request_id.clone(),
        tenant: context.tenant.clone(),
        budget_ms: context.budget_ms,
    };
    let outcome = plugin.call_call(store, &context, tool, arguments)?;
    Ok(outcome.map(|result| result.output).map_err(|error| match error {
        types::ToolError::UnknownTool(tool) => ToolFailure::UnknownTool(tool),
        types::ToolError::InvalidArguments(message) => ToolFailure::InvalidArguments(message),
        types::ToolError::Failed(message) => ToolFailure::Failed(message),
    }))
}

fn spec(spec: types::ToolSpec) -> Spec {
    let hints = spec.annotations;
    Spec {
        name: spec.name,
        title: spec.title,
        description: spec.description,
        input_schema: spec.input_schema,
        output_schema: spec.output_schema,
        annotations: Annotations {
            read_only: hints.read_only,
            destructive: hints.destructive,
            idempotent: hints.idempotent,
            open_world: hints.open_world,
        },
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log(level, message);
    }
}

impl progress::Host for State {
    fn report(&mut self, done: f64, total: Option<f64>, message: Option<String>) {
        self.progress(done, total, message);
    }
}

impl memory::Host for State {
    fn recall(&mut self, query: String, limit: u32) -> Result<Vec<memory::Hit>, String> {
        let hits = State::recall(self, &query, limit)?;
        Ok(hits.into_iter().map(|Hit { text, score }| memory::Hit { text, score }).collect())
    }
}

impl http::Host for State {
    fn fetch(&mut self, request: http::Request) -> Result<http::Response, String> {
        let request =
            net::Request { method: request.method, url: request.url, headers: request.headers, body: request.body };
        let response = State::fetch(self, request)?;
        Ok(http::Response { status: response.status, headers: response.headers, body: response.body })
    }
}
