//! Tools as published: names, descriptions and JSON Schemas checked when a
//! plugin loads, and the digest an approval records for each.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ComponentError, SchemaRole};
use crate::manifest::Manifest;
use crate::wit::Spec;

/// Longest published tool name (`<plugin>.<tool>`), MCP clients' common limit.
pub const MAX_TOOL_NAME: usize = 48;
/// Longest tool description.
pub const MAX_DESCRIPTION: usize = 4096;

/// MCP-style behaviour hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Annotations {
    /// Changes nothing outside the call.
    pub read_only: bool,
    /// May destroy or overwrite data.
    pub destructive: bool,
    /// Repeating has no further effect.
    pub idempotent: bool,
    /// Reaches the outside world.
    pub open_world: bool,
}

/// A tool as published to clients.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// `<plugin>.<tool>`.
    pub name: String,
    /// The plugin's id.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// Human-readable title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What it does.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
    /// JSON Schema of the result, if promised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Behaviour hints.
    pub annotations: Annotations,
}

/// A loaded tool: what is published, and its compiled validators.
pub(crate) struct Tool {
    pub(crate) info: ToolInfo,
    /// The plugin's own name for it.
    pub(crate) local: String,
    pub(crate) input: jsonschema::Validator,
    pub(crate) output: Option<jsonschema::Validator>,
}

impl Tool {
    /// Checks the tool `spec` of the plugin `manifest` describes and
    /// compiles its schemas.
    pub(crate) fn from_spec(manifest: &Manifest, spec: Spec) -> Result<Self, ComponentError> {
        let name = format!("{}.{}", manifest.id, spec.name);
        let name_ok = !spec.name.is_empty()
            && name.len() <= MAX_TOOL_NAME
            && spec.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ComponentError::ToolName { name: spec.name, max: MAX_TOOL_NAME });
        }
        if spec.description.chars().count() > MAX_DESCRIPTION {
            return Err(ComponentError::DescriptionTooLong { tool: name, max: MAX_DESCRIPTION });
        }
        let (input_schema, input) = schema(&name, &spec.input_schema, SchemaRole::Input)?;
        if input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(ComponentError::InputNotObject { tool: name });
        }
        let output = spec.output_schema.as_deref().map(|text| schema(&name, text, SchemaRole::Output)).transpose()?;
        Ok(Self {
            info: ToolInfo {
                name,
                plugin: manifest.id.clone(),
                version: manifest.version.clone(),
                title: spec.title,
                description: spec.description,
                input_schema,
                output_schema: output.as_ref().map(|(v, _)| v.clone()),
                annotations: spec.annotations,
            },
            local: spec.name,
            input,
            output: output.map(|(_, v)| v),
        })
    }
}

/// Tool `tool`'s `role` schema, parsed and compiled.
fn schema(tool: &str, text: &str, role: SchemaRole) -> Result<(Value, jsonschema::Validator), ComponentError> {
    let value: Value = serde_json::from_str(text).map_err(|err| ComponentError::SchemaNotJson {
        tool: tool.to_owned(),
        schema: role,
        message: err.to_string(),
    })?;
    let validator = jsonschema::validator_for(&value).map_err(|err| ComponentError::SchemaInvalid {
        tool: tool.to_owned(),
        schema: role,
        message: err.to_string(),
    })?;
    Ok((value, validator))
}

/// A tool's digest: everything a model reads about it.
pub(crate) fn digest(info: &ToolInfo) -> String {
    let surface =
        serde_json::json!([info.title, info.description, info.input_schema, info.output_schema, info.annotations]);
    let hash = Sha256::digest(surface.to_string().as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, description: &str, input: &str, output: Option<&str>) -> Spec {
        Spec {
            name: name.to_owned(),
            title: None,
            description: description.to_owned(),
            input_schema: input.to_owned(),
            output_schema: output.map(str::to_owned),
            annotations: Annotations { read_only: true, destructive: false, idempotent: true, open_world: false },
        }
    }

    #[test]
    fn specs_are_checked_and_refusals_name_the_tool() {
        let manifest: Manifest = toml::from_str("id = \"p\"\nversion = \"1\"\ndescription = \"x\"\n").unwrap();
        let object = r#"{"type": "object"}"#;
        let tool = Tool::from_spec(&manifest, spec("t", "d", object, Some(object))).unwrap();
        assert_eq!((tool.info.name.as_str(), tool.local.as_str()), ("p.t", "t"));
        let refused = |spec| Tool::from_spec(&manifest, spec).err();
        assert_eq!(
            refused(spec("a b", "d", object, None)),
            Some(ComponentError::ToolName { name: "a b".into(), max: 48 })
        );
        assert_eq!(
            refused(spec("t", &"x".repeat(MAX_DESCRIPTION + 1), object, None)),
            Some(ComponentError::DescriptionTooLong { tool: "p.t".into(), max: MAX_DESCRIPTION })
        );
        assert!(matches!(
            refused(spec("t", "d", "{", None)),
            Some(ComponentError::SchemaNotJson { schema: SchemaRole::Input, .. })
        ));
        assert!(matches!(
            refused(spec("t", "d", object, Some(r#"{"type": 5}"#))),
            Some(ComponentError::SchemaInvalid { schema: SchemaRole::Output, .. })
        ));
        assert_eq!(
            refused(spec("t", "d", r#"{"type": "string"}"#, None)),
            Some(ComponentError::InputNotObject { tool: "p.t".into() })
        );
    }
}
