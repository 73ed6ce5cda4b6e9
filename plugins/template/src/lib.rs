//! A starting point for an Engram plugin: one tool, `greet`.

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};

struct Template;

impl Plugin for Template {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("greet", "Greets someone by name.")
                .input(json!({
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1}},
                    "required": ["name"],
                    "additionalProperties": false
                }))
                .output(json!({
                    "type": "object",
                    "properties": {"greeting": {"type": "string"}},
                    "required": ["greeting"]
                }))
                .read_only(),
        ]
    }

    fn call(_context: &Context, tool: &str, args: Value) -> Result<Value, Error> {
        match tool {
            "greet" => {
                let name = args["name"].as_str().ok_or_else(|| Error::invalid("`name` must be a string"))?;
                Ok(json!({"greeting": format!("Hello, {name}!")}))
            }
            other => Err(Error::invalid(format!("no tool `{other}`"))),
        }
    }
}

engram_plugin_sdk::export_plugin!(Template);
