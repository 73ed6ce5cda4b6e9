//! A plugin whose input schema refers to itself in a cycle: a host that
//! compiled and used it would recurse until it ran out of memory.

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};

struct Cyclic;

impl Plugin for Cyclic {
    fn tools() -> Vec<Tool> {
        let schema = json!({
            "type": "object",
            "$ref": "#/$defs/a",
            "$defs": {
                "a": {"$ref": "#/$defs/b"},
                "b": {"$ref": "#/$defs/a"}
            }
        });
        vec![Tool::new("loop", "Arguments that never finish validating.").input(schema)]
    }

    fn call(_: &Context, _: &str, args: Value) -> Result<Value, Error> {
        Ok(args)
    }
}

engram_plugin_sdk::export_plugin!(Cyclic);
