//! The fixtures of the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`): `test_*` tools, `test://`
//! resources and `test_*` prompts with exactly the content its scenarios
//! check. Served only with `server.mcp_conformance_fixtures = true`, which
//! CI sets for the suite's run, so that each protocol behaviour (content
//! types, logging, progress, sampling, elicitation, subscriptions) is
//! checked against the daemon's real transport, sessions and dispatcher.
//! Logging and sampling are deprecated from 2026-07-28 on (SEP-2577); the
//! suite tests them for 2025-11-25, which Engram serves.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::model::{
    CallToolResult, CreateMessageRequestParams, ElicitRequestParams, GetPromptResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A 1×1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A tiny WAV (a RIFF header, no samples).
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

fn parse<T: DeserializeOwned>(value: Value) -> T {
    // The values below are literals of the MCP schema: they always parse.
    serde_json::from_value(value).unwrap_or_else(|err| unreachable!("a fixture does not fit the schema: {err}"))
}

fn no_arguments(name: &str, description: &str) -> Tool {
    parse(json!({"name": name, "description": description, "inputSchema": {"type": "object", "properties": {}}}))
}

fn one_string(name: &str, description: &str, argument: &str) -> Tool {
    parse(json!({"name": name, "description": description, "inputSchema": {
        "type": "object", "properties": {argument: {"type": "string"}}, "required": [argument]}}))
}

/// The fixture tools.
pub(crate) fn tools() -> Vec<Tool> {
    vec![
        no_arguments("test_simple_text", "Returns simple text"),
        no_arguments("test_image_content", "Returns an image"),
        no_arguments("test_audio_content", "Returns audio"),
        no_arguments("test_embedded_resource", "Returns an embedded resource"),
        no_arguments("test_multiple_content_types", "Returns text, an image and a resource"),
        no_arguments("test_tool_with_logging", "Logs three messages while it runs"),
        no_arguments("test_error_handling", "Always fails"),
        no_arguments("test_tool_with_progress", "Reports progress"),
        one_string("test_sampling", "Asks the client's LLM", "prompt"),
        one_string("test_elicitation", "Asks the user", "message"),
        no_arguments("test_elicitation_sep1034_defaults", "Asks the user, with defaults"),
        no_arguments("test_elicitation_sep1330_enums", "Asks the user to pick from enums"),
        no_arguments("test_reconnection", "Closes its stream mid-call, then answers on the resumed stream"),
        parse(json!({"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"type": "object", "properties": {
                    "street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false}})),
    ]
}

fn text(text: &str) -> CallToolResult {
    parse(json!({"content": [{"type": "text", "text": text}]}))
}

/// Runs fixture tool `name`, or `None` when there is none of that name.
pub(crate) async fn call(
    name: &str,
    arguments: &serde_json::Map<String, Value>,
    context: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResult, McpError>> {
    let argument = |key: &str| arguments.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let result = match name {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => parse(json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]})),
        "test_audio_content" => parse(json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]})),
        "test_embedded_resource" => parse(json!({"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content."}}]})),
        "test_multiple_content_types" => parse(json!({"content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}]})),
        "test_error_handling" => parse(json!({"isError": true, "content": [{"type": "text",
                "text": "This tool intentionally returns an error for testing"}]})),
        "test_tool_with_logging" => {
            for (i, message) in
                ["Tool execution started", "Tool processing data", "Tool execution completed"].into_iter().enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let param: LoggingMessageNotificationParam =
                    parse(json!({"level": "info", "logger": "conformance", "data": message}));
                let _ = context.peer.notify_logging_message(param).await;
            }
            text("Tool with logging executed successfully")
        }
        "test_tool_with_progress" => {
            let token = context.meta.get_progress_token();
            for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(token) = &token {
                    let mut param = ProgressNotificationParam::new(token.clone(), progress);
                    param.total = Some(100.0);
                    let _ = context.peer.notify_progress(param).await;
                }
            }
            text("Tool with progress executed successfully")
        }
        "test_sampling" => {
            let params: CreateMessageRequestParams = parse(json!({"messages": [{"role": "user",
                "content": {"type": "text", "text": argument("prompt")}}], "maxTokens": 100}));
            match context.peer.create_message(params).await {
                Ok(reply) => {
                    let reply = serde_json::to_value(&reply).unwrap_or_default();
                    let said = reply.pointer("/content/text").and_then(Value::as_str).unwrap_or_default().to_owned();
                    text(&format!("LLM response: {said}"))
                }
                Err(err) => return Some(Err(McpError::internal_error(format!("sampling failed: {err}"), None))),
            }
        }
        "test_elicitation" => {
            let schema = json!({"type": "object", "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}},
                "required": ["username", "email"]});
            return Some(elicit(context, &argument("message"), schema, "User response").await);
        }
        "test_elicitation_sep1034_defaults" => {
            let schema = json!({"type": "object", "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": true}}});
            return Some(
                elicit(
                    context,
                    "Please review and update the form fields with defaults",
                    schema,
                    "Elicitation completed",
                )
                .await,
            );
        }
        "test_elicitation_sep1330_enums" => {
            let schema = json!({"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"}]}}}});
            return Some(
                elicit(context, "Please select options from the enum fields", schema, "Elicitation completed").await,
            );
        }
        "test_reconnection" => {
            // Let the client see the stream's priming event, then answer:
            // rmcp keeps the session's events for a client that reconnects.
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("Reconnection test completed")
        }
        _ => return None,
    };
    Some(Ok(result))
}

async fn elicit(
    context: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResult, McpError> {
    let params: ElicitRequestParams = parse(json!({"mode": "form", "message": message, "requestedSchema": schema}));
    match context.peer.create_elicitation(params).await {
        Ok(answer) => {
            let answer = serde_json::to_value(&answer).unwrap_or_default();
            let action = answer["action"].as_str().unwrap_or("unknown");
            let content = answer.get("content").cloned().unwrap_or(Value::Null);
            Ok(text(&format!("{label}: action={action}, content={content}")))
        }
        Err(err) => Err(McpError::internal_error(format!("elicitation failed: {err}"), None)),
    }
}

/// The fixture resources.
pub(crate) fn resources() -> Vec<Resource> {
    parse(json!([
        {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "static-binary", "description": "A static PNG", "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
    ]))
}

/// The fixture resource template.
pub(crate) fn templates() -> Vec<ResourceTemplate> {
    parse(json!([{"uriTemplate": "test://template/{id}/data", "name": "template", "description": "Data by id",
        "mimeType": "application/json"}]))
}

/// Reads fixture resource `uri`, or `None` when it is not one.
pub(crate) fn read(uri: &str) -> Option<ReadResourceResult> {
    let contents = match uri {
        "test://static-text" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."})
        }
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
        "test://watched-resource" => json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content"}),
        _ => {
            let id = uri.strip_prefix("test://template/")?.strip_suffix("/data")?;
            let data = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            json!({"uri": uri, "mimeType": "application/json", "text": data.to_string()})
        }
    };
    Some(parse(json!({"contents": [contents]})))
}

/// The fixture prompts.
pub(crate) fn prompts() -> Vec<Prompt> {
    parse(json!([
        {"name": "test_simple_prompt", "description": "A simple prompt"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt embedding a resource", "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image"},
    ]))
}

/// Fixture prompt `name`, or `None` when it is not one.
pub(crate) fn prompt(name: &str, arguments: &serde_json::Map<String, Value>) -> Option<GetPromptResult> {
    let argument = |key: &str| arguments.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let user = |content: Value| json!({"role": "user", "content": content});
    let messages = match name {
        "test_simple_prompt" => vec![user(json!({"type": "text", "text": "This is a simple prompt for testing."}))],
        "test_prompt_with_arguments" => vec![user(json!({"type": "text", "text": format!(
            "Prompt with arguments: arg1='{}', arg2='{}'", argument("arg1"), argument("arg2"))}))],
        "test_prompt_with_embedded_resource" => vec![
            user(json!({"type": "resource", "resource": {"uri": argument("resourceUri"), "mimeType": "text/plain",
                "text": "Embedded resource content for testing."}})),
            user(json!({"type": "text", "text": "Please process the embedded resource above."})),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": PNG, "mimeType": "image/png"})),
            user(json!({"type": "text", "text": "Please analyze the image above."})),
        ],
        _ => return None,
    };
    Some(parse(json!({"messages": messages})))
}

/// Candidates for a fixture prompt's argument, or `None` when not one.
pub(crate) fn candidates(prompt: &str, argument: &str) -> Option<Vec<String>> {
    (prompt == "test_prompt_with_arguments" && argument == "arg1")
        .then(|| ["paris", "park", "party"].map(String::from).to_vec())
}
