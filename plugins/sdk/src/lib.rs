//! Write Engram plugins in Rust.
//!
//! A plugin is a type with a few attributes: [`macro@plugin`] on an `impl`
//! block makes each function marked `#[tool]` a tool — its doc comment the
//! description, its argument and result types (deriving `JsonSchema`) the
//! schemas — and exports the WebAssembly component Engram loads (`cargo
//! build --release --target wasm32-wasip2`). Host services — [`log`],
//! [`progress`] and, when the operator granted them, [`recall`] and
//! [`fetch`] — are plain functions.
//!
//! ```ignore
//! use engram_plugin_sdk::{Error, plugin};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct GreetArgs {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Greeting {
//!     greeting: String,
//! }
//!
//! struct Greeter;
//!
//! #[plugin]
//! impl Greeter {
//!     /// Greets someone by name.
//!     #[tool(read_only)]
//!     fn greet(args: GreetArgs) -> Result<Greeting, Error> {
//!         Ok(Greeting { greeting: format!("Hello, {}!", args.name) })
//!     }
//! }
//! ```
//!
//! Or, by hand (schemas as JSON, any logic for dispatch), implement
//! [`Plugin`] and call [`export_plugin!`]:
//!
//! ```ignore
//! use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};
//!
//! struct Greeter;
//!
//! impl Plugin for Greeter {
//!     fn tools() -> Vec<Tool> {
//!         vec![Tool::new("greet", "Greets someone by name.")
//!             .input(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))
//!             .read_only()]
//!     }
//!
//!     fn call(_: &Context, _tool: &str, args: Value) -> Result<Value, Error> {
//!         Ok(json!({"greeting": format!("Hello, {}!", args["name"].as_str().unwrap_or("world"))}))
//!     }
//! }
//!
//! engram_plugin_sdk::export_plugin!(Greeter);
//! ```

pub use engram_plugin_sdk_macros::plugin;
pub use serde_json::{self, Value, json};

/// The generated bindings of `wit/since_v0.1.0/plugin.wit`, the
/// `engram:plugin@0.1.0` contract (used by [`export_plugin!`]).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/since_v0.1.0",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "engram_plugin_sdk::bindings",
    });
}

use bindings::engram::plugin::{http, log as host_log, memory, progress as host_progress, types};

/// Log severity.
pub use bindings::engram::plugin::log::Level;

/// One tool a plugin offers; build it with [`Tool::new`] and the setters.
#[derive(Debug, Clone)]
pub struct Tool {
    name: String,
    title: Option<String>,
    description: String,
    input: Value,
    output: Option<Value>,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool,
}

impl Tool {
    /// A tool named `name` (letters, digits, `_`, `-`) doing `description`;
    /// it takes any object until [`Tool::input`] says otherwise.
    pub fn new(name: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            title: None,
            description: description.to_owned(),
            input: json!({"type": "object"}),
            output: None,
            read_only: false,
            destructive: false,
            idempotent: false,
            open_world: false,
        }
    }

    /// A human-readable title.
    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.to_owned());
        self
    }

    /// JSON Schema of the arguments object (checked by Engram before a call).
    pub fn input(mut self, schema: Value) -> Self {
        self.input = schema;
        self
    }

    /// JSON Schema of the result (checked by Engram after a call).
    pub fn output(mut self, schema: Value) -> Self {
        self.output = Some(schema);
        self
    }

    /// The tool changes nothing outside its call (also idempotent).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self.idempotent = true;
        self
    }

    /// The tool may destroy or overwrite data.
    pub fn destructive(mut self) -> Self {
        self.destructive = true;
        self
    }

    /// Repeating a call with the same arguments has no further effect.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The tool reaches the outside world.
    pub fn open_world(mut self) -> Self {
        self.open_world = true;
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Who is calling, and the time left.
#[derive(Debug, Clone)]
pub struct Context {
    /// Unique per call.
    pub request_id: String,
    /// The tenant the call runs for, if any.
    pub tenant: Option<String>,
    /// Milliseconds left before the host stops the call.
    pub budget_ms: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The arguments make no sense for the tool (say which and why).
    InvalidArguments(String),
    /// The tool could not produce a result (say why).
    Failed(String),
}

impl Error {
    /// An argument problem.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArguments(message.into())
    }

    /// A failure to produce a result.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// What a plugin is: its tools and how to call them.
pub trait Plugin {
    /// The tools, in the order clients list them.
    fn tools() -> Vec<Tool>;

    /// Runs `tool` (one of [`Plugin::tools`]) with `arguments`, already
    /// validated against its input schema.
    fn call(context: &Context, tool: &str, arguments: Value) -> Result<Value, Error>;

    /// Whether `name` is one of its tools (by default, looked up in
    /// [`Plugin::tools`]; [`macro@plugin`] answers without building them).
    fn has_tool(name: &str) -> bool {
        // Tool names, computed once per instance (the specs build JSON
        // schemas). One plugin per component, so one `Self` shares this.
        static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| Self::tools().into_iter().map(|t| t.name).collect()).iter().any(|n| n == name)
    }
}

/// The JSON Schema of `T` as a tool schema: draft 2020-12, subschemas
/// inlined (clients read it whole).
#[doc(hidden)]
pub fn __schema_for<T: schemars::JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let mut schema = settings.into_generator().into_root_schema_for::<T>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schema
}

/// Arguments as the tool's type; the host checked them against its schema,
/// so a failure here names what the schema could not say.
#[doc(hidden)]
pub fn __parse_args<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, Error> {
    serde_json::from_value(arguments).map_err(|err| Error::invalid(err.to_string()))
}

/// A tool's result as JSON.
#[doc(hidden)]
pub fn __to_output<T: serde::Serialize>(output: &T) -> Result<Value, Error> {
    serde_json::to_value(output).map_err(|err| Error::failed(format!("the result is not JSON: {err}")))
}

/// Writes to the daemon's log, tagged with the plugin and call.
pub fn log(level: Level, message: &str) {
    host_log::write(level, message);
}

/// Reports progress of a long call.
pub fn progress(done: f64, total: Option<f64>, message: Option<&str>) {
    host_progress::report(done, total, message);
}

/// Passages from Engram's memory relevant to `query` (needs the `memory`
/// grant): `(text, score)` pairs, best first.
pub fn recall(query: &str, limit: u32) -> Result<Vec<(String, f32)>, String> {
    memory::recall(query, limit).map(|hits| hits.into_iter().map(|h| (h.text, h.score)).collect())
}

/// An HTTP request through the host (needs an `http` grant for the host).
/// Returns the status and the body.
pub fn fetch(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let request = http::Request {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: body.to_vec(),
    };
    http::fetch(&request).map(|r| (r.status, r.body))
}

#[doc(hidden)]
pub fn __describe<P: Plugin>() -> Vec<types::ToolSpec> {
    P::tools()
        .into_iter()
        .map(|t| types::ToolSpec {
            name: t.name,
            title: t.title,
            description: t.description,
            input_schema: t.input.to_string(),
            output_schema: t.output.map(|o| o.to_string()),
            annotations: types::Annotations {
                read_only: t.read_only,
                destructive: t.destructive,
                idempotent: t.idempotent,
                open_world: t.open_world,
            },
        })
        .collect()
}

#[doc(hidden)]
pub fn __call<P: Plugin>(
    context: types::CallContext,
    tool: String,
    arguments: String,
) -> Result<types::CallResult, types::ToolError> {
    if !P::has_tool(&tool) {
        return Err(types::ToolError::UnknownTool(tool));
    }
    let arguments: Value = serde_json::from_str(&arguments)
        .map_err(|err| types::ToolError::InvalidArguments(format!("arguments are not JSON: {err}")))?;
    let context = Context { request_id: context.request_id, tenant: context.tenant, budget_ms: context.budget_ms };
    match P::call(&context, &tool, arguments) {
        Ok(output) => Ok(types::CallResult { output: output.to_string() }),
        Err(Error::InvalidArguments(message)) => Err(types::ToolError::InvalidArguments(message)),
        Err(Error::Failed(message)) => Err(types::ToolError::Failed(message)),
    }
}

/// Exports a [`Plugin`] as the component's `describe` and `call`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __EngramPluginExport;

        impl $crate::bindings::Guest for __EngramPluginExport {
            fn describe() -> ::std::vec::Vec<$crate::bindings::engram::plugin::types::ToolSpec> {
                $crate::__describe::<$plugin>()
            }

            fn call(
                context: $crate::bindings::engram::plugin::types::CallContext,
                tool: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<
                $crate::bindings::engram::plugin::types::CallResult,
                $crate::bindings::engram::plugin::types::ToolError,
            > {
                $crate::__call::<$plugin>(context, tool, arguments)
            }
        }

        $crate::bindings::export!(__EngramPluginExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        /// Who to greet.
        #[schemars(length(min = 1))]
        name: String,
    }

    #[test]
    fn schemas_keep_doc_comments() {
        let schema = super::__schema_for::<Args>();
        assert_eq!(schema["properties"]["name"]["description"], "Who to greet.", "{schema}");
    }
}
