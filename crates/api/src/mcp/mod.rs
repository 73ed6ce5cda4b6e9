//! The MCP server: Engram as tools, resources and prompts for MCP clients,
//! on rmcp's streamable HTTP transport at `/mcp` (both spec versions rmcp
//! serves: 2025-11-25 sessions and 2026-07-28 stateless requests). It sits
//! behind the same listeners, guard and limits as every other route; the
//! caller (operator or tenant) comes from the transport, never from a
//! tool argument. `engram mcp-stdio` bridges stdio clients to it.

pub(crate) mod envelope;
mod fixtures;
mod resources;
pub(crate) mod tools;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use engram_ops::Caller;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, CompletionInfo, ErrorCode,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, Reference, ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::app::AppState;
use tools::{Call, OpTool};

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// Items per page of `tools/list`, `resources/list` and friends.
const PAGE: usize = 100;

/// The streamable HTTP service answering at [`PATH`].
pub(crate) fn service(state: AppState, max_body_bytes: u64) -> StreamableHttpService<Engram, LocalSessionManager> {
    let operations = Arc::new(tools::operations());
    let config = StreamableHttpServerConfig::default()
        // The TCP guard checks Host and Origin for every route, this one
        // included; the Unix socket needs neither.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(usize::try_from(max_body_bytes).unwrap_or(usize::MAX));
    let factory = move || {
        Ok(Engram {
            state: state.clone(),
            operations: operations.clone(),
            watch: Mutex::new(None),
            subscriptions: Arc::default(),
            memory_subscriptions: Arc::default(),
        })
    };
    StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config)
}

/// One MCP session's (or one stateless request's) server.
pub(crate) struct Engram {
    state: AppState,
    operations: Arc<Vec<OpTool>>,
    /// Stops this session's `tools/list_changed` forwarder when the session ends.
    watch: Mutex<Option<DropGuard>>,
    /// Resources this session subscribed to (2025-11-25 `resources/subscribe`).
    subscriptions: Arc<Mutex<HashSet<String>>>,
    /// Of those, the compact memories, by whose conversation.
    memory_subscriptions: Arc<Mutex<HashSet<engram_memory::Scope>>>,
}

/// The caller the listener's guard established for the HTTP request this
/// MCP request came in.
fn caller(context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the transport established no caller", None))
}

/// One page of `items` from `cursor` (an opaque offset).
fn page<T>(items: Vec<T>, request: Option<PaginatedRequestParams>) -> Result<(Vec<T>, Option<String>), McpError> {
    let start = match request.and_then(|r| r.cursor) {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= items.len())
            .ok_or_else(|| McpError::invalid_params(format!("unknown cursor {cursor:?}"), None))?,
    };
    let end = (start + PAGE).min(items.len());
    let next = (end < items.len()).then(|| format!("p{end}"));
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

impl Engram {
    /// Every tool `caller` may call: operations, then plugin tools.
    fn tools(&self, caller: &Caller) -> Vec<rmcp::model::Tool> {
        let mut tools: Vec<rmcp::model::Tool> =
            self.operations.iter().filter(|op| op.admits(caller)).map(|op| op.tool.clone()).collect();
        if let Some(host) = self.state.plugins() {
            for info in host.list_tools() {
                let tool = tools::plugin_tool(&info);
                if tools.iter().any(|t| t.name == tool.name) {
                    tracing::warn!(tool = %info.name, "plugin tool hidden: its MCP name is taken");
                    continue;
                }
                tools.push(tool);
            }
        }
        if self.state.conformance_fixtures() {
            tools.extend(fixtures::tools());
        }
        tools
    }

    /// Values `argument` of prompt or resource template `reference` can
    /// take: collection names, certificate ids, plugin ids.
    async fn candidates(&self, reference: &Reference, argument: &str, caller: &Caller) -> Vec<String> {
        let template = match reference {
            Reference::Prompt(prompt) => {
                if let Some(values) = fixtures::candidates(&prompt.name, argument)
                    && self.state.conformance_fixtures()
                {
                    return values;
                }
                (prompt.name == resources::CITE_EVIDENCE && argument == "collection").then_some("collection")
            }
            Reference::Resource(template) => match (template.uri.as_str(), argument) {
                (resources::CERTIFICATE_TEMPLATE, "id") => Some("certificate"),
                (resources::PLUGIN_TEMPLATE, "id") => Some("plugin"),
                (resources::INSIGHT_TEMPLATE, "id") => Some("insight"),
                (resources::MEMORY_TEMPLATE, "conversation") => Some("conversation"),
                _ => None,
            },
            _ => None,
        };
        match template {
            Some(kind) => resources::names(&self.state, caller, kind).await,
            None => Vec::new(),
        }
    }

    /// Forwards plugin reloads as `notifications/tools/list_changed` until
    /// `stop` is cancelled or `notify` fails (the client is gone).
    fn forward_list_changes<F, Fut>(&self, stop: CancellationToken, notify: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let Some(host) = self.state.plugins() else { return };
        let mut changes = host.subscribe();
        changes.mark_unchanged();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = changes.changed() => {
                        if changed.is_err() || !notify().await {
                            break;
                        }
                    }
                }
            }
        });
    }
}

impl Engram {
    /// Sends `notify(uri)` for each change to a compact memory in
    /// `subscribed` until `stop` is cancelled or `notify` fails.
    fn forward_memory_changes<F, Fut>(
        &self,
        stop: CancellationToken,
        subscribed: Arc<Mutex<HashSet<engram_memory::Scope>>>,
        notify: F,
    ) where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let mut changes = self.state.services().memory().changes();
        tokio::spawn(async move {
            loop {
                let watched: Vec<engram_memory::Scope> = {
                    let change = tokio::select! {
                        () = stop.cancelled() => break,
                        change = changes.recv() => change,
                    };
                    let subscribed = subscribed.lock().unwrap_or_else(|e| e.into_inner());
                    match change {
                        Ok(scope) => subscribed.get(&scope).cloned().into_iter().collect(),
                        // Fell behind: any of them may have changed.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            subscribed.iter().cloned().collect()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                };
                for scope in watched {
                    if !notify(format!("{}{}", resources::MEMORY, scope.conversation)).await {
                        return;
                    }
                }
            }
        });
    }
}

impl ServerHandler for Engram {
    #[allow(deprecated)] // logging: 2025-11-25 clients may set a level
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_prompts()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("engram", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Engram keeps your documents searchable with certified evidence. Use rag_search with `alpha` \
                 (e.g. 0.1) on a calibrated collection to get a set of passages that holds the evidence with \
                 probability >= 1 - alpha when `coverage_guarantee` is set (for questions like `questions_from`; \
                 `no_guarantee` says why not), and cite the paths and character offsets it returns. Plugin tools are named <plugin>__<tool>.",
            )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = caller(&context)?;
        self.state.plugins_loaded().await;
        let (tools, next) = page(self.tools(&caller), request)?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tools(&Caller::Operator).into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = caller(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        let cancelled = context.ct.clone();
        if let Some(op) = self.operations.iter().find(|op| op.tool.name == request.name) {
            let progress = context.meta.get_progress_token().map(|token| {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<engram_ops::Advance>();
                let peer = context.peer.clone();
                tokio::spawn(async move {
                    while let Some(advance) = rx.recv().await {
                        let mut param = ProgressNotificationParam::new(token.clone(), advance.done as f64);
                        param.total = advance.total.map(|t| t as f64);
                        param.message = Some(advance.message);
                        if peer.notify_progress(param).await.is_err() {
                            break;
                        }
                    }
                });
                tx
            });
            let call = Call { state: self.state.clone(), caller, progress, cancelled: cancelled.clone() };
            let result = tokio::select! {
                result = op.run(call, arguments) => result,
                () = cancelled.cancelled() => return Err(cancelled_error()),
            };
            return Ok(tools::op_result(result).into());
        }
        if self.state.conformance_fixtures()
            && let Some(result) = fixtures::call(&request.name, &arguments, &context).await
        {
            return result.map(Into::into);
        }
        let host = self.state.plugins_loaded().await;
        let found = host.and_then(|host| {
            host.list_tools().into_iter().find(|info| tools::plugin_tool_name(&info.name) == request.name)
        });
        let (Some(host), Some(info)) = (host, found) else {
            return Err(McpError::invalid_params(format!("no tool named `{}`", request.name), None));
        };
        let tool = tools::plugin_tool(&info);
        let mut arguments = arguments;
        tools::coerce(&mut arguments, &tool.input_schema);
        let scope = engram_plugin_host::Scope { tenant: caller.tenant().map(ToString::to_string), conversation: None };
        let result = tokio::select! {
            result = host.call_tool_in(scope, &info.name, serde_json::Value::Object(arguments)) => result,
            () = cancelled.cancelled() => return Err(cancelled_error()),
        };
        Ok(tools::plugin_result(&tool, result).into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut all = resources::list(&self.state, &caller(&context)?).await.map_err(protocol_error)?;
        if self.state.conformance_fixtures() {
            all.extend(fixtures::resources());
        }
        let (items, next) = page(all, request)?;
        let mut result = ListResourcesResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let mut all = resources::templates();
        if self.state.conformance_fixtures() {
            all.extend(fixtures::templates());
        }
        let (items, next) = page(all, request)?;
        let mut result = ListResourceTemplatesResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if self.state.conformance_fixtures()
            && let Some(result) = fixtures::read(&request.uri)
        {
            return Ok(result.into());
        }
        Ok(resources::read(&self.state, &caller(&context)?, &request.uri).await.map_err(protocol_error)?.into())
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let mut all = resources::prompts();
        if self.state.conformance_fixtures() {
            all.extend(fixtures::prompts());
        }
        let (items, next) = page(all, request)?;
        let mut result = ListPromptsResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let caller = caller(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        if self.state.conformance_fixtures()
            && let Some(result) = fixtures::prompt(&request.name, &arguments)
        {
            return Ok(result.into());
        }
        Ok(resources::prompt(&self.state, &caller, &request.name, arguments).await.map_err(protocol_error)?.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let caller = caller(&context)?;
        let prefix = request.argument.value.as_str();
        let mut values: Vec<String> = self
            .candidates(&request.r#ref, &request.argument.name, &caller)
            .await
            .into_iter()
            .filter(|value| value.starts_with(prefix))
            .collect();
        let total = values.len();
        values.truncate(CompletionInfo::MAX_VALUES);
        let completion =
            CompletionInfo::with_pagination(values, u32::try_from(total).ok(), total > CompletionInfo::MAX_VALUES)
                .map_err(|err| McpError::internal_error(err, None))?;
        Ok(CompleteResult::new(completion))
    }

    #[allow(deprecated)] // logging: 2025-11-25 clients may set a level
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Engram sends log messages only from the conformance fixtures; the
        // level is accepted so clients that always set one keep working.
        Ok(())
    }

    #[allow(deprecated)] // 2025-11-25 sessions still subscribe this way
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(conversation) = resources::memory_conversation(&request.uri) {
            let scope = memory_scope(&caller(&context)?, conversation)?;
            self.memory_subscriptions.lock().unwrap_or_else(|e| e.into_inner()).insert(scope);
            self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).insert(request.uri);
            return Ok(());
        }
        // Only resources whose changes Engram tracks can be subscribed to:
        // plugin manifests (they change when plugins reload) and compact
        // memories (they change when a summary is written or forgotten).
        let tracked = request.uri.starts_with("engram://plugins/")
            || (self.state.conformance_fixtures() && request.uri == "test://watched-resource");
        if !tracked {
            return Err(McpError::invalid_params(
                format!("{} cannot be subscribed to: its updates are not tracked; read it again instead", request.uri),
                None,
            ));
        }
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).insert(request.uri);
        Ok(())
    }

    #[allow(deprecated)] // 2025-11-25 sessions still subscribe this way
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(Ok(conversation)) = resources::memory_conversation(&request.uri) {
            let scope = memory_scope(&caller(&context)?, Ok(conversation))?;
            self.memory_subscriptions.lock().unwrap_or_else(|e| e.into_inner()).remove(&scope);
        }
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()).remove(&request.uri);
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // A 2025-11-25 session: its server lives as long as the session.
        let stop = CancellationToken::new();
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone().drop_guard());
        let peer = context.peer;
        let subscriptions = self.subscriptions.clone();
        self.forward_memory_changes(stop.clone(), self.memory_subscriptions.clone(), {
            let peer = peer.clone();
            move |uri| {
                let peer = peer.clone();
                async move { peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await.is_ok() }
            }
        });
        self.forward_list_changes(stop, move || {
            let peer = peer.clone();
            let plugins: Vec<String> = subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|uri| uri.starts_with("engram://plugins/"))
                .cloned()
                .collect();
            async move {
                for uri in plugins {
                    if peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await.is_err() {
                        return false;
                    }
                }
                peer.notify_tool_list_changed().await.is_ok()
            }
        });
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        // Of the resources, the compact memories are tracked.
        let memories: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| matches!(resources::memory_conversation(uri), Some(Ok(_))))
            .cloned()
            .collect();
        accepted.resource_subscriptions = (!memories.is_empty()).then_some(memories);
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        // A 2026-07-28 subscription: it lasts as long as its request.
        let stop = CancellationToken::new();
        let sink = context.sink().clone();
        let who = caller(context.request_context())?;
        let memories = context
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .filter_map(|uri| resources::memory_conversation(uri))
            .map(|conversation| memory_scope(&who, conversation))
            .collect::<Result<HashSet<_>, _>>()?;
        if !memories.is_empty() {
            let sink = sink.clone();
            self.forward_memory_changes(stop.clone(), Arc::new(Mutex::new(memories)), move |uri| {
                let sink = sink.clone();
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            });
        }
        self.forward_list_changes(stop.clone(), move || {
            let sink = sink.clone();
            async move { sink.notify_tool_list_changed().await.is_ok() }
        });
        context.cancelled().await;
        stop.cancel();
        Ok(())
    }
}

/// `caller`'s conversation named by a compact-memory URI.
fn memory_scope(
    caller: &Caller,
    conversation: Result<engram_ops::ConversationId, engram_ops::Error>,
) -> Result<engram_memory::Scope, McpError> {
    let conversation = conversation.map_err(|err| McpError::invalid_params(err.to_string(), None))?;
    Ok(engram_memory::Scope { tenant: caller.tenant().cloned(), conversation })
}

/// The answer to a call the client cancelled (rmcp drops it: a cancelled
/// request gets no response).
fn cancelled_error() -> McpError {
    McpError::new(ErrorCode::INTERNAL_ERROR, "the request was cancelled", None)
}

/// An operation's failure as a JSON-RPC error (for resources and prompts;
/// tools answer failures as error results the model can read).
fn protocol_error(err: engram_ops::Error) -> McpError {
    use engram_ops::ErrorKind;
    let data = Some(serde_json::json!({ "code": err.kind.code() }));
    match err.kind {
        ErrorKind::Invalid | ErrorKind::Forbidden => McpError::invalid_params(err.message, data),
        ErrorKind::NotFound => McpError::resource_not_found(err.message, data),
        ErrorKind::Unavailable | ErrorKind::Corrupt | ErrorKind::Internal => {
            McpError::internal_error(err.message, data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_item_once() {
        let items: Vec<usize> = (0..(2 * PAGE + 3)).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let request = cursor.map(|cursor| PaginatedRequestParams::default().with_cursor(Some(cursor)));
            let (page, next) = page(items.clone(), request).unwrap();
            assert!(page.len() <= PAGE);
            seen.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, items);
        let bad = PaginatedRequestParams::default().with_cursor(Some("nonsense".into()));
        assert_eq!(page(items, Some(bad)).unwrap_err().code, ErrorCode::INVALID_PARAMS);
    }
}
