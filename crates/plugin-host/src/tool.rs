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
/// Longest tool title.
pub const MAX_TITLE: usize = 128;
/// Most tools one plugin may publish (each lands in every client's tool
/// list and the model's context).
pub const MAX_TOOLS: usize = 64;
/// Largest schema text, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Deepest nesting of a schema's JSON.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Compiled size limit of one `pattern` (the `regex` engine: linear time,
/// no backtracking, so validation cannot run away on crafted input).
const REGEX_SIZE: usize = 1 << 20;

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
        if spec.title.as_ref().is_some_and(|title| title.chars().count() > MAX_TITLE) {
            return Err(ComponentError::TitleTooLong { tool: name, max: MAX_TITLE });
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

/// Tool `tool`'s `role` schema, parsed, checked for shape and compiled.
fn schema(tool: &str, text: &str, role: SchemaRole) -> Result<(Value, jsonschema::Validator), ComponentError> {
    let invalid = |message: String| ComponentError::SchemaInvalid { tool: tool.to_owned(), schema: role, message };
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(invalid(format!("{} bytes, more than {MAX_SCHEMA_BYTES}", text.len())));
    }
    // serde_json refuses nesting past 128 before anything recurses deeper.
    let value: Value = serde_json::from_str(text).map_err(|err| ComponentError::SchemaNotJson {
        tool: tool.to_owned(),
        schema: role,
        message: err.to_string(),
    })?;
    check_shape(&value).map_err(invalid)?;
    let validator = jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(REGEX_SIZE).dfa_size_limit(REGEX_SIZE))
        .build(&value)
        .map_err(|err| invalid(err.to_string()))?;
    Ok((value, validator))
}

/// What the host refuses before compiling a schema: nesting deeper than
/// [`MAX_SCHEMA_DEPTH`], references other than local JSON pointers
/// (`#/…`), dynamic references, and any `$ref` cycle (a schema that
/// refers back to itself can make validation recurse without bound).
fn check_shape(schema: &Value) -> Result<(), String> {
    let mut refs: Vec<(String, String)> = Vec::new();
    collect_refs(schema, String::new(), 0, &mut refs)?;
    // A reference at `from` to `to` leads into every reference inside `to`.
    let inside = |to: &str, at: &str| at == to || at.starts_with(&format!("{to}/"));
    for (from, to) in &refs {
        if schema.pointer(to).is_none() {
            return Err(format!("`$ref` at `#{from}` points to `#{to}`, which does not exist"));
        }
    }
    // Depth-first search for a cycle among the references.
    fn visits(
        refs: &[(String, String)],
        at: usize,
        path: &mut Vec<usize>,
        done: &mut Vec<bool>,
        inside: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), String> {
        if path.contains(&at) {
            return Err(format!("`$ref` at `#{}` leads back to itself: recursive schemas are refused", refs[at].0));
        }
        if done[at] {
            return Ok(());
        }
        path.push(at);
        for next in (0..refs.len()).filter(|&next| inside(&refs[at].1, &refs[next].0)) {
            visits(refs, next, path, done, inside)?;
        }
        path.pop();
        done[at] = true;
        Ok(())
    }
    let mut done = vec![false; refs.len()];
    for start in 0..refs.len() {
        visits(&refs, start, &mut Vec::new(), &mut done, &inside)?;
    }
    Ok(())
}

/// Every `$ref` in `value` as (where it is, where it points), both JSON
/// pointers; refuses what [`check_shape`] refuses on the way.
fn collect_refs(value: &Value, at: String, depth: usize, refs: &mut Vec<(String, String)>) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!("nested deeper than {MAX_SCHEMA_DEPTH} levels"));
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    "$ref" => {
                        let target = child.as_str().unwrap_or_default();
                        let Some(pointer) = target.strip_prefix('#').filter(|p| p.is_empty() || p.starts_with('/'))
                        else {
                            return Err(format!(
                                "`$ref` at `#{at}` is {child}: only local references (`#/…`) are allowed"
                            ));
                        };
                        refs.push((at.clone(), pointer.to_owned()));
                    }
                    "$dynamicRef" | "$recursiveRef" => {
                        return Err(format!("`{key}` at `#{at}`: dynamic references are refused"));
                    }
                    _ => {}
                }
                let escaped = key.replace('~', "~0").replace('/', "~1");
                collect_refs(child, format!("{at}/{escaped}"), depth + 1, refs)?;
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, format!("{at}/{i}"), depth + 1, refs)?;
            }
        }
        _ => {}
    }
    Ok(())
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
        let titled = Spec { title: Some("x".repeat(MAX_TITLE + 1)), ..spec("t", "d", object, None) };
        assert_eq!(refused(titled), Some(ComponentError::TitleTooLong { tool: "p.t".into(), max: MAX_TITLE }));
    }

    /// Schemas that could make the host's own validation run without bound
    /// are refused at load, naming why; ordinary references still work.
    #[test]
    fn cyclic_deep_large_and_backtracking_schemas_are_refused() {
        let manifest: Manifest = toml::from_str("id = \"p\"\nversion = \"1\"\ndescription = \"x\"\n").unwrap();
        let refused = |input: &str| match Tool::from_spec(&manifest, spec("t", "d", input, None)) {
            Err(ComponentError::SchemaInvalid { message, .. }) => message,
            other => panic!("{input} was not refused as invalid: {:?}", other.map(|t| t.info.name)),
        };
        for (schema, needle) in [
            (r##"{"type": "object", "$ref": "#"}"##.to_owned(), "leads back to itself"),
            (
                r##"{"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}},
                    "$defs": {"x": {"$ref": "#/$defs/y"}, "y": {"properties": {"b": {"$ref": "#/$defs/x"}}}}}"##
                    .to_owned(),
                "leads back to itself",
            ),
            (
                r##"{"type": "object", "properties": {"tree": {"items": {"$ref": "#/properties/tree"}}}}"##.to_owned(),
                "leads back to itself",
            ),
            (r#"{"type": "object", "$ref": "https://example.com/s.json"}"#.to_owned(), "only local references"),
            (r##"{"type": "object", "$ref": "#/$defs/missing"}"##.to_owned(), "does not exist"),
            (r##"{"type": "object", "$dynamicRef": "#meta"}"##.to_owned(), "dynamic references"),
            (
                format!(r#"{{"type": "object", "properties": {{"a": {}1{}}}}}"#, "[".repeat(40), "]".repeat(40)),
                "nested deeper",
            ),
            (format!(r#"{{"type": "object", "description": "{}"}}"#, "x".repeat(MAX_SCHEMA_BYTES)), "bytes, more than"),
            // A backreference needs a backtracking engine: the host's is linear.
            (
                r#"{"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)\\1$"}}}"#.to_owned(),
                "regex",
            ),
        ] {
            let message = refused(&schema);
            assert!(message.contains(needle), "{message} lacks {needle}");
        }
        // Acyclic references, and the usual patterns, are fine.
        let fine = r##"{"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}},
            "$defs": {"x": {"type": "string", "pattern": "^[a-z]+(-[a-z]+)*$"}}}"##;
        let tool = Tool::from_spec(&manifest, spec("t", "d", fine, None)).unwrap();
        assert!(tool.input.is_valid(&serde_json::json!({"a": "ab-cd", "b": "x"})));
        assert!(!tool.input.is_valid(&serde_json::json!({"a": "AB"})));
    }
}
