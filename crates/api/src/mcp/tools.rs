//! Tools: Engram's operations (through the same named handlers as their
//! HTTP routes) and every loaded plugin tool, with their schemas,
//! annotations and a structured result plus a text copy.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;

use engram_ops::{Caller, Error, Streaming, Tool};
use engram_plugin_host::{CallError, ToolInfo};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, ToolAnnotations};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::op::Progress;

/// What a tool call runs with: the daemon, who calls (from the
/// transport), where progress goes, and the call's cancellation.
pub(crate) struct Call {
    pub(crate) state: AppState,
    pub(crate) caller: Caller,
    pub(crate) progress: Option<tokio::sync::mpsc::UnboundedSender<engram_ops::Advance>>,
    pub(crate) cancelled: CancellationToken,
}

type Run = Box<dyn Fn(Call, JsonObject) -> Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>> + Send + Sync>;

/// An operation offered as a tool.
pub(crate) struct OpTool {
    /// As listed.
    pub(crate) tool: rmcp::model::Tool,
    admits: fn(&Caller) -> bool,
    run: Run,
}

impl OpTool {
    /// Whether `caller` may see and call it.
    pub(crate) fn admits(&self, caller: &Caller) -> bool {
        (self.admits)(caller)
    }

    /// Runs it with `arguments`: checked against the hidden fields,
    /// coerced, decoded, authorized for the caller, then handled.
    pub(crate) async fn run(&self, call: Call, arguments: JsonObject) -> Result<Value, Error> {
        (self.run)(call, arguments).await
    }
}

/// Every operation offered as a tool. Each later feature adds its own
/// here, through [`op`] or [`streaming_op`] over its handlers.
pub(crate) fn operations() -> Vec<OpTool> {
    use crate::{experience, memory, rag};
    vec![
        op(rag::search),
        streaming_op(rag::ingest),
        op(rag::collections),
        streaming_op(rag::calibrate),
        op(memory::append),
        op(memory::recall),
        op(memory::forget),
        op(memory::summary),
        op(experience::lookup),
        op(experience::feedback),
    ]
}

/// Operation `O`, answered by `handler` (the function its route uses).
fn op<O, F, Fut>(handler: F) -> OpTool
where
    O: Tool,
    F: Fn(AppState, O) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<O::Response, Error>> + Send + 'static,
{
    OpTool {
        tool: describe::<O>(),
        admits: |caller| O::AUDIENCE.admits(caller),
        run: Box::new(move |call, arguments| {
            Box::pin(async move {
                let request = decode::<O>(arguments, &call.caller)?;
                let response = handler(call.state, request).await?;
                serde_json::to_value(response).map_err(Error::internal)
            })
        }),
    }
}

/// Streaming operation `O`: its progress events become progress
/// notifications, and a cancelled call answers `Break`, so the work stops
/// at its next consistent point.
fn streaming_op<O, F, Fut>(handler: F) -> OpTool
where
    O: Tool + Streaming,
    F: Fn(AppState, O, Progress<O>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<O::Response, Error>> + Send + 'static,
{
    OpTool {
        tool: describe::<O>(),
        admits: |caller| O::AUDIENCE.admits(caller),
        run: Box::new(move |call, arguments| {
            Box::pin(async move {
                let request = decode::<O>(arguments, &call.caller)?;
                let (sink, cancelled) = (call.progress, call.cancelled);
                let progress: Progress<O> = Box::new(move |event| {
                    if let Some(sink) = &sink {
                        let _ = sink.send(O::advance(event));
                    }
                    if cancelled.is_cancelled() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                });
                let response = handler(call.state, request, progress).await?;
                serde_json::to_value(response).map_err(Error::internal)
            })
        }),
    }
}

/// Tool arguments as operation `O`'s request, for `caller`.
fn decode<O: Tool>(mut arguments: JsonObject, caller: &Caller) -> Result<O, Error> {
    if let Some(field) = O::HIDDEN.iter().find(|field| arguments.contains_key(**field)) {
        return Err(Error::invalid(format!("`{field}` is not an argument of {}: the connection decides it", O::NAME)));
    }
    coerce(&mut arguments, &input_schema::<O>());
    let mut request: O = serde_path_to_error::deserialize(Value::Object(arguments)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." { Error::invalid(inner.to_string()) } else { Error::invalid(format!("{path}: {inner}")) }
    })?;
    request.authorize(caller)?;
    Ok(request)
}

/// `O` as an MCP tool: its name, title, description (the request type's
/// doc comment), input schema without the hidden fields, output schema and
/// annotations.
fn describe<O: Tool>() -> rmcp::model::Tool {
    debug_assert!(engram_ops::valid_tool_name(O::NAME), "{}", O::NAME);
    let mut input = input_schema::<O>();
    let description = input.remove("description").and_then(|d| d.as_str().map(tool_description));
    input.remove("title");
    let mut output = schema(schemars::generate::SchemaSettings::draft2020_12().for_serialize(), |generator| {
        generator.root_schema_for::<O::Response>()
    });
    output.remove("title");
    output.remove("description");
    // Every response is an object (some as a union of object shapes); MCP
    // wants that said at the root.
    output.entry("type").or_insert_with(|| Value::from("object"));
    let hints = O::HINTS;
    let annotations = ToolAnnotations::new()
        .read_only(hints.read_only)
        .destructive(hints.destructive)
        .idempotent(hints.idempotent)
        .open_world(hints.open_world);
    rmcp::model::Tool::new(O::NAME, description.unwrap_or_default(), Arc::new(input))
        .with_title(O::TITLE)
        .with_raw_output_schema(Arc::new(output))
        .with_annotations(annotations)
}

/// The request type's schema, as a tool's input: hidden fields removed.
fn input_schema<O: Tool>() -> JsonObject {
    let mut input =
        schema(schemars::generate::SchemaSettings::draft2020_12(), |generator| generator.root_schema_for::<O>());
    if let Some(Value::Object(properties)) = input.get_mut("properties") {
        for field in O::HIDDEN {
            properties.remove(*field);
        }
    }
    if let Some(Value::Array(required)) = input.get_mut("required") {
        required.retain(|name| !name.as_str().is_some_and(|name| O::HIDDEN.contains(&name)));
    }
    input.entry("properties").or_insert_with(|| Value::Object(Map::new()));
    input
}

fn schema(
    settings: schemars::generate::SchemaSettings,
    generate: impl FnOnce(&mut schemars::SchemaGenerator) -> schemars::Schema,
) -> JsonObject {
    let mut generator = settings.into_generator();
    match generate(&mut generator).to_value() {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

/// A request type's doc comment as a tool description: without the route
/// it starts with (`` `POST /v1/search`: ``), capitalized.
fn tool_description(doc: &str) -> String {
    let text = match doc.strip_prefix('`').and_then(|rest| rest.split_once("`: ")) {
        Some((_, text)) => text,
        None => doc,
    };
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Loosens what clients that send every value as a string (MCP Inspector's
/// command line) send: a top-level string argument whose schema wants a
/// number, an integer or a boolean, and that parses as one, becomes one.
pub(crate) fn coerce(arguments: &mut JsonObject, schema: &JsonObject) {
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return;
    };
    for (name, value) in arguments.iter_mut() {
        let Value::String(text) = value else { continue };
        let Some(property) = properties.get(name) else { continue };
        let wants = |kind: &str| match property.get("type") {
            Some(Value::String(t)) => t == kind,
            Some(Value::Array(types)) => types.iter().any(|t| t == kind),
            _ => false,
        };
        let coerced = if wants("integer") {
            text.trim().parse::<i64>().ok().map(Value::from)
        } else if wants("number") {
            text.trim().parse::<f64>().ok().and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
        } else if wants("boolean") {
            text.trim().parse::<bool>().ok().map(Value::Bool)
        } else {
            None
        };
        if let Some(coerced) = coerced {
            *value = coerced;
        }
    }
}

/// The MCP name of plugin tool `name` (`<plugin>.<tool>`):
/// `<plugin>__<tool>`, in the character set every client accepts.
pub(crate) fn plugin_tool_name(name: &str) -> String {
    name.replacen('.', "__", 1)
}

/// A loaded plugin tool as an MCP tool: its own schemas and annotations.
pub(crate) fn plugin_tool(info: &ToolInfo) -> rmcp::model::Tool {
    let input = match &info.input_schema {
        Value::Object(object) => object.clone(),
        _ => JsonObject::new(),
    };
    let hints = info.annotations;
    let annotations = ToolAnnotations::new()
        .read_only(hints.read_only)
        .destructive(hints.destructive)
        .idempotent(hints.idempotent)
        .open_world(hints.open_world);
    let mut tool = rmcp::model::Tool::new(plugin_tool_name(&info.name), info.description.clone(), Arc::new(input))
        .with_annotations(annotations);
    if let Some(title) = &info.title {
        tool = tool.with_title(title.clone());
    }
    // MCP output schemas describe an object; a plugin promising anything
    // else gets its result as text only.
    if let Some(Value::Object(output)) = &info.output_schema
        && output.get("type").and_then(Value::as_str) == Some("object")
    {
        tool = tool.with_raw_output_schema(Arc::new(output.clone()));
    }
    tool
}

/// A plugin call's result: structured when the tool declares an object
/// output schema (always with a text copy), an error result the model can
/// read otherwise.
pub(crate) fn plugin_result(tool: &rmcp::model::Tool, result: Result<Value, CallError>) -> CallToolResult {
    match result {
        Ok(value) if tool.output_schema.is_some() => CallToolResult::structured(value),
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(value.to_string())]),
        Err(err) => CallToolResult::error(vec![ContentBlock::text(err.to_string())]),
    }
}

/// An operation's answer as a tool result.
pub(crate) fn op_result(result: Result<Value, Error>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => CallToolResult::error(vec![ContentBlock::text(format!("{}: {}", err.kind.code(), err.message))]),
    }
}

#[cfg(test)]
mod tests {
    use engram_rag::ops::{Calibrate, Ingest, Search};

    use super::*;

    #[test]
    fn tools_carry_their_operations_schemas_without_hidden_fields() {
        let search = describe::<Search>();
        assert_eq!(search.name, "rag_search");
        let properties = search.input_schema["properties"].as_object().unwrap();
        assert!(properties.contains_key("alpha") && properties.contains_key("query"));
        assert!(!properties.contains_key("tenant"), "the tenant comes from the transport");
        assert!(search.description.as_deref().unwrap().starts_with("Hybrid"), "{:?}", search.description);
        let output = search.output_schema.as_ref().unwrap();
        assert_eq!(output["type"], "object");
        assert!(output.get("anyOf").is_some(), "{output:?}");
        let annotations = search.annotations.as_ref().unwrap();
        assert_eq!(annotations.read_only_hint, Some(true));

        let ingest = describe::<Ingest>();
        let properties = ingest.input_schema["properties"].as_object().unwrap();
        assert!(!properties.contains_key("stream") && !properties.contains_key("tenant"));
        assert_eq!(ingest.annotations.as_ref().unwrap().destructive_hint, Some(true));
        assert!(describe::<Calibrate>().input_schema["required"].as_array().unwrap().iter().any(|r| r == "collection"));
        for tool in operations() {
            assert!(engram_ops::valid_tool_name(&tool.tool.name), "{}", tool.tool.name);
        }
    }

    #[test]
    fn hidden_fields_are_refused_and_tenants_scoped() {
        let args = |value: Value| value.as_object().unwrap().clone();
        let err =
            decode::<Search>(args(serde_json::json!({"query": "q", "tenant": "bob"})), &Caller::Operator).unwrap_err();
        assert!(err.message.contains("`tenant`"), "{err}");
        let alice = Caller::Tenant("alice".parse().unwrap());
        let search = decode::<Search>(args(serde_json::json!({"query": "q"})), &alice).unwrap();
        assert_eq!(search.tenant.as_ref().map(|t| t.as_str()), Some("alice"));
        let err = decode::<Calibrate>(args(serde_json::json!({"collection": "c", "generate": 3})), &alice).unwrap_err();
        assert_eq!(err.kind, engram_ops::ErrorKind::Forbidden);
    }

    #[test]
    fn string_arguments_are_coerced_where_the_schema_wants_numbers() {
        let mut arguments =
            serde_json::json!({"query": "42", "k": "3", "alpha": "0.1", "other": "7"}).as_object().unwrap().clone();
        coerce(&mut arguments, &input_schema::<Search>());
        assert_eq!(Value::Object(arguments), serde_json::json!({"query": "42", "k": 3, "alpha": 0.1, "other": "7"}));
    }

    #[test]
    fn descriptions_drop_the_route() {
        assert_eq!(tool_description("`POST /v1/search`: hybrid top-k."), "Hybrid top-k.");
        assert_eq!(tool_description("Lists things."), "Lists things.");
        assert_eq!(plugin_tool_name("calc.eval"), "calc__eval");
    }
}
