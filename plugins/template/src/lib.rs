//! A starting point for an Engram plugin: one tool, `greet`.
//!
//! Each function marked `#[tool]` is a tool: its doc comment is the
//! description the model reads, its argument type (deriving `Deserialize`
//! and `JsonSchema`) the input schema, its result type the output schema.

use engram_plugin_sdk::{Error, plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The arguments of `greet`; doc comments become the schema's descriptions.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GreetArgs {
    /// Who to greet.
    #[schemars(length(min = 1))]
    name: String,
}

/// What `greet` returns.
#[derive(Serialize, JsonSchema)]
struct Greeting {
    greeting: String,
}

struct Template;

#[plugin]
impl Template {
    /// Greets someone by name.
    #[tool(read_only, idempotent)]
    fn greet(args: GreetArgs) -> Result<Greeting, Error> {
        if args.name.trim().is_empty() {
            return Err(Error::invalid("`name` is blank"));
        }
        Ok(Greeting { greeting: format!("Hello, {}!", args.name) })
    }
}
