//! A plugin that floods the tool list: every tool it publishes lands in
//! each client's `tools/list` and in the model's context.

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value};

struct Many;

impl Plugin for Many {
    fn tools() -> Vec<Tool> {
        (0..5000).map(|i| Tool::new(&format!("tool_{i}"), "One of very many.")).collect()
    }

    fn call(_: &Context, _: &str, args: Value) -> Result<Value, Error> {
        Ok(args)
    }
}

engram_plugin_sdk::export_plugin!(Many);
