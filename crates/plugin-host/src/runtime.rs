//! The wasmtime side: one engine, the compiled-component cache, and a fresh
//! sandboxed store per call.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::{CallError, ComponentError, HostError};
use crate::grants::Effective;
use crate::manifest::{Budgets, FileMode, Manifest};
use crate::net;
use crate::recall::{Hit, Recall, Scope};
use crate::wit::{self, CallContext, LogLevel, Pre, Spec, ToolFailure};

/// Concurrent calls the pooling allocator has slots for.
const SLOTS: u32 = 64;
/// Bytes of stdout and of stderr kept per call.
const OUTPUT_CAP: usize = 16 << 10;
/// Largest result a call may return.
const RESULT_CAP: usize = 4 << 20;
/// Log lines one call may write; the rest are dropped.
const LOG_LINES: usize = 64;
/// Longest log line kept.
const LOG_LINE: usize = 2048;
/// Characters a progress message keeps.
const PROGRESS_LINE: usize = 256;
/// One epoch, in microseconds: deadlines are this precise.
const TICK_US: u64 = 500;
/// Guest stack.
const STACK: usize = 512 << 10;
/// Most passages one recall may ask for.
const RECALL_LIMIT: u32 = 64;
/// Live resources (streams, pollables, files) one call may hold.
const RESOURCES: usize = 4096;

/// Everything a call's sandbox is built from besides the component.
pub(crate) struct Setup<'a> {
    pub manifest: &'a Manifest,
    pub effective: &'a Arc<Effective>,
    pub recall: Option<Arc<dyn Recall>>,
    pub scope: &'a Scope,
}

/// A component compiled and linked against its contract, ready to
/// instantiate.
pub(crate) struct Compiled {
    pre: Pre,
}

pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    /// When epoch 0 began: epoch `e` is reached `e` ticks after it.
    epoch_start: Instant,
    /// The engine's epoch, as far as the ticker has advanced it.
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl Runtime {
    pub(crate) fn new(cache_dir: Option<PathBuf>) -> Result<Self, HostError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(SLOTS)
            .total_core_instances(SLOTS * 8)
            .total_memories(SLOTS)
            .total_tables(SLOTS * 4)
            .max_memory_size((Budgets::MAX_MEMORY_MIB << 20) as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(STACK)
            // All plugins are WASIp2 and synchronous: async support would
            // triple the cost of a call.
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|err| HostError::Engine(format!("{err:#}")))?;
        // One ticker advances every store's epoch each tick (500 µs): deadlines
        // are counted in ticks. It ends with the engine.
        let weak = engine.weak();
        let epoch_start = Instant::now();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let published = Arc::clone(&epoch);
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // Deadlines are only as punctual as this thread: ask for a
                // higher priority (needs CAP_SYS_NICE; best effort). It
                // sleeps between ticks, so it never starves anything.
                // A real-time (FIFO) thread preempts the busy ones at once;
                // without the privilege, a raised nice value is the fallback.
                let param = libc::sched_param { sched_priority: 1 };
                // SAFETY: `pthread_self()` is this live thread and `param`
                // a valid sched_param; failure only leaves the policy as is.
                #[allow(unsafe_code)]
                let fifo = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
                if fifo != 0 {
                    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), -10);
                }
                // Epochs count real ticks: a late wake-up (sleep
                // overshoot, or this thread descheduled under load) catches
                // up instead of stretching every deadline.
                let mut ticks: u64 = 0;
                while let Some(engine) = weak.upgrade() {
                    let due = epoch_start.elapsed().as_micros() as u64 / TICK_US;
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                    published.store(ticks, std::sync::atomic::Ordering::Release);
                    drop(engine);
                    std::thread::sleep(Duration::from_micros(TICK_US));
                }
            })
            .map_err(|err| HostError::Ticker(err.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|err| HostError::Link(format!("WASI: {err:#}")))?;
        wit::add_to_linker(&mut linker).map_err(|err| HostError::Link(format!("{err:#}")))?;
        Ok(Self { engine, linker, cache_dir, epoch_start, epoch })
    }

    /// Compiles `bytes` (or loads the cached artifact) and links it.
    /// Returns it with its sha256.
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<(Compiled, String), ComponentError> {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let component = self.cached(bytes, &sha256)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|err| ComponentError::Link { message: format!("{err:#}") })?;
        Ok((Compiled { pre: Pre::new(pre)? }, sha256))
    }

    fn cached(&self, bytes: &[u8], sha256: &str) -> Result<Component, ComponentError> {
        let invalid = |err: wasmtime::Error| ComponentError::Invalid { message: format!("{err:#}") };
        let compile = || Component::new(&self.engine, bytes).map_err(invalid);
        let Some(dir) = &self.cache_dir else { return compile() };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let path = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if path.is_file() {
            // SAFETY: the cache directory is Engram's own; artifacts in it
            // are written only below, by this engine configuration (its
            // compatibility hash is in the name), and renamed into place
            // whole.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &path) };
            match cached {
                Ok(component) => return Ok(component),
                Err(err) => tracing::warn!(path = %path.display(), error = %err, "recompiling a bad cached component"),
            }
        }
        let artifact = self.engine.precompile_component(bytes).map_err(invalid)?;
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let partial = path.with_extension(format!("{}.partial", std::process::id()));
            std::fs::write(&partial, &artifact)?;
            std::fs::rename(&partial, &path)
        });
        if let Err(err) = written {
            tracing::warn!(path = %path.display(), error = %err, "cannot cache a compiled component");
        }
        // SAFETY: `artifact` was just produced by this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &artifact) };
        component.map_err(invalid)
    }

    /// A sandboxed store for one call that must end by `deadline` (its
    /// epoch deadline, and the limit of its host calls).
    fn store(&self, setup: &Setup<'_>, tool: &str, deadline: Instant) -> Result<Store<State>, CallError> {
        let manifest = setup.manifest;
        let (stdout, stderr) = (Capture::default(), Capture::default());
        // Deny by default: no arguments, environment or network; only
        // bounded stdout/stderr, and the directories the operator granted.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for (guest, host, mode) in &setup.effective.files {
            let perms = if *mode == FileMode::Write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(host, guest, perms).map_err(|err| CallError::Crashed {
                tool: tool.to_owned(),
                message: format!("the granted directory {} cannot be opened: {err:#}", host.display()),
            })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES);
        let state = State {
            wasi: wasi.build(),
            table,
            limiter: Limiter { cap: (manifest.budgets.memory_mib << 20) as usize, denied: None },
            stdout,
            stderr,
            tool: tool.to_owned(),
            logged: 0,
            effective: Arc::clone(setup.effective),
            deadline,
            usage: net::Usage::default(),
            recall: setup.recall.clone(),
            scope: setup.scope.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Bytes the host copies out of the guest in one transfer (a host
        // call's arguments, the result): enough for the largest the host
        // accepts, so a guest cannot make the host allocate more.
        store.set_hostcall_fuel(hostcall_fuel(setup.effective));
        store.set_max_component_handles(RESOURCES);
        // Before instantiation: a component's start code runs then too.
        // Epoch `e` is reached `e` ticks after `epoch_start`: trap at the first
        // epoch at or past `deadline`, counted from the epoch the ticker has
        // reached (if it lags, the trap comes later, never early).
        let target = deadline.saturating_duration_since(self.epoch_start).as_micros().div_ceil(u128::from(TICK_US));
        let target = u64::try_from(target).unwrap_or(u64::MAX);
        let now = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        store.set_epoch_deadline(target.saturating_sub(now).max(1));
        store.epoch_deadline_trap();
        Ok(store)
    }

    /// The plugin's tool specs.
    pub(crate) fn describe(&self, compiled: &Compiled, manifest: &Manifest) -> Result<Vec<Spec>, CallError> {
        // `describe` gets no capabilities at all.
        let setup = Setup { manifest, effective: &Arc::default(), recall: None, scope: &Scope::default() };
        let tool = format!("{}.describe", manifest.id);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(manifest.budgets.wall_ms);
        let mut store = self.store(&setup, &tool, deadline)?;
        let specs = compiled.pre.instantiate(&mut store).and_then(|plugin| plugin.describe(&mut store));
        store.data().flush_output();
        specs.map_err(|err| classify(err, &store, manifest, "describe", started))
    }

    /// Runs tool `local` (published as `name`) in a fresh store.
    pub(crate) fn call(
        &self,
        compiled: &Compiled,
        setup: &Setup<'_>,
        name: &str,
        local: &str,
        arguments: &str,
    ) -> Result<String, CallError> {
        let manifest = setup.manifest;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(manifest.budgets.wall_ms);
        let mut store = self.store(setup, name, deadline)?;
        let left = deadline.saturating_duration_since(Instant::now()).as_millis();
        let context = CallContext {
            request_id: format!("{:016x}", rand_id()),
            tenant: setup.scope.tenant.clone(),
            budget_ms: u64::try_from(left).unwrap_or(u64::MAX),
        };
        let outcome =
            compiled.pre.instantiate(&mut store).and_then(|plugin| plugin.call(&mut store, &context, local, arguments));
        store.data().flush_output();
        match outcome {
            Ok(Ok(output)) if output.len() > RESULT_CAP => Err(CallError::Budget {
                tool: name.to_owned(),
                budget: "output_bytes".to_owned(),
                limit: RESULT_CAP as u64,
                used: output.len() as u64,
            }),
            Ok(Ok(output)) => Ok(output),
            Ok(Err(ToolFailure::UnknownTool(tool))) => {
                Err(CallError::UnknownTool { tool: format!("{}.{tool}", manifest.id) })
            }
            Ok(Err(ToolFailure::InvalidArguments(message))) => {
                Err(CallError::ToolFailed { tool: name.to_owned(), kind: "invalid_arguments".to_owned(), message })
            }
            Ok(Err(ToolFailure::Failed(message))) => {
                Err(CallError::ToolFailed { tool: name.to_owned(), kind: "failed".to_owned(), message })
            }
            Err(err) => Err(classify(err, &store, manifest, name, started)),
        }
    }
}

impl Runtime {
    /// Repeated calls on one instance, each timed.
    pub(crate) fn warm_calls(
        &self,
        compiled: &Compiled,
        setup: &Setup<'_>,
        name: &str,
        local: &str,
        arguments: &str,
        calls: usize,
    ) -> Result<Vec<Duration>, CallError> {
        let manifest = setup.manifest;
        // A long deadline: this measures call overhead, not budgets.
        let mut store = self.store(setup, name, Instant::now() + Duration::from_secs(3600))?;
        let started = Instant::now();
        let plugin =
            compiled.pre.instantiate(&mut store).map_err(|err| classify(err, &store, manifest, name, started))?;
        let context = CallContext { request_id: "bench".to_owned(), tenant: None, budget_ms: 0 };
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let outcome = plugin.call(&mut store, &context, local, arguments);
            times.push(started.elapsed());
            if let Err(err) = outcome {
                return Err(classify(err, &store, manifest, name, started));
            }
        }
        Ok(times)
    }
}

/// The hostcall fuel of a call with `effective` capabilities (saturating:
/// an `http_bytes` grant near `u64::MAX` means "no cap", not an overflow).
fn hostcall_fuel(effective: &Effective) -> usize {
    RESULT_CAP.max(usize::try_from(effective.http_bytes).unwrap_or(usize::MAX)).saturating_mul(2)
}

/// Turns a trap into the budget it broke, or a crash.
fn classify(
    err: wasmtime::Error,
    store: &Store<State>,
    manifest: &Manifest,
    tool: &str,
    started: Instant,
) -> CallError {
    let state = store.data();
    classify_with(err, state.limiter.denied, &state.effective, manifest, tool, started)
}

/// [`classify`], given what the limiter refused (a memory growth the guest
/// may have survived: it explains the trap only when no budget of time did).
fn classify_with(
    err: wasmtime::Error,
    denied: Option<usize>,
    effective: &Effective,
    manifest: &Manifest,
    tool: &str,
    started: Instant,
) -> CallError {
    let trap = err.downcast_ref::<Trap>();
    if let (Some(denied), false) = (denied, trap == Some(&Trap::Interrupt)) {
        return CallError::Budget {
            tool: tool.to_owned(),
            budget: "memory_mib".to_owned(),
            limit: manifest.budgets.memory_mib,
            used: (denied as u64).div_ceil(1 << 20),
        };
    }
    match trap {
        Some(Trap::Interrupt) => CallError::Budget {
            tool: tool.to_owned(),
            budget: "wall_ms".to_owned(),
            limit: manifest.budgets.wall_ms,
            used: started.elapsed().as_millis() as u64,
        },
        Some(Trap::StackOverflow) => {
            CallError::Crashed { tool: tool.to_owned(), message: "stack overflow (recursion too deep)".to_owned() }
        }
        // Rust guests keep their stack in linear memory: overflowing it
        // reads below address 0.
        Some(Trap::MemoryOutOfBounds) => CallError::Crashed {
            tool: tool.to_owned(),
            message: "out-of-bounds memory access (a guest stack overflow from recursion too deep, or a bug)"
                .to_owned(),
        },
        Some(trap) => CallError::Crashed { tool: tool.to_owned(), message: format!("wasm trap: {trap}") },
        None if err.root_cause().to_string().contains("fuel allocated for hostcalls") => CallError::Crashed {
            tool: tool.to_owned(),
            message: format!("copied more than {} bytes to the host at once (hostcall fuel)", hostcall_fuel(effective)),
        },
        None if err.root_cause().to_string().contains("resource table has no free keys") => CallError::Crashed {
            tool: tool.to_owned(),
            message: format!("held more than {RESOURCES} live resources at once (the resource table's cap)"),
        },
        // Not a trap (a host-side failure): its innermost cause, without the backtrace.
        None => CallError::Crashed { tool: tool.to_owned(), message: err.root_cause().to_string() },
    }
}

/// A per-call id; uniqueness within the process is enough.
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 40) ^ n
}

/// What one call's store holds.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    stdout: Capture,
    stderr: Capture,
    tool: String,
    logged: usize,
    /// What the operator granted this plugin.
    effective: Arc<Effective>,
    /// When the wall budget ends (host calls must not outlive it).
    deadline: Instant,
    /// HTTP quotas used so far.
    usage: net::Usage,
    recall: Option<Arc<dyn Recall>>,
    scope: Scope,
}

impl State {
    /// The guest's stdout/stderr, bounded, into the log.
    fn flush_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let captured = pipe.0.lock().unwrap_or_else(|e| e.into_inner());
            if !captured.kept.is_empty() {
                let text = String::from_utf8_lossy(&captured.kept);
                let dropped = captured.dropped;
                tracing::info!(tool = %self.tool, stream, dropped, output = %text.trim_end(), "plugin output");
            }
        }
    }
}

/// A guest's stdout or stderr: the first [`OUTPUT_CAP`] bytes are kept for
/// the log, the rest counted and dropped; writing never fails (a guest
/// whose print fails would abort).
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn take(&self, bytes: &[u8]) {
        let mut captured = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = OUTPUT_CAP.saturating_sub(captured.kept.len()).min(bytes.len());
        captured.kept.extend_from_slice(&bytes[..room]);
        captured.dropped += (bytes.len() - room) as u64;
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.take(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The memory budget; remembers a refused growth so the error can say so.
struct Limiter {
    cap: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

/// A guest's text as one log line of at most `max` characters: control
/// characters (newlines among them, which would forge a record of their
/// own, and terminal escapes) are written as escapes.
fn one_line(text: &str, max: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max));
    let mut kept = 0;
    for c in text.chars() {
        let escaped = c.is_control().then(|| c.escape_default());
        for c in escaped.into_iter().flatten().chain((!c.is_control()).then_some(c)) {
            if kept == max {
                return line;
            }
            line.push(c);
            kept += 1;
        }
    }
    line
}

/// The host functions of every contract version, in the host's terms (the
/// adapters in [`crate::wit`] call these).
impl State {
    /// A log line from the guest: truncated, and dropped past the call's quota.
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        self.logged += 1;
        if self.logged > LOG_LINES {
            return;
        }
        let message = one_line(&message, LOG_LINE);
        let tool = &self.tool;
        match level {
            LogLevel::Trace => tracing::trace!(%tool, "{message}"),
            LogLevel::Debug => tracing::debug!(%tool, "{message}"),
            LogLevel::Info => tracing::info!(%tool, "{message}"),
            LogLevel::Warn => tracing::warn!(%tool, "{message}"),
            LogLevel::Error => tracing::error!(%tool, "{message}"),
        }
    }

    /// A progress report from the guest.
    pub(crate) fn progress(&mut self, done: f64, total: Option<f64>, message: Option<String>) {
        let message = message.as_deref().map(|m| one_line(m, PROGRESS_LINE)).unwrap_or_default();
        tracing::debug!(tool = %self.tool, done, total, message, "plugin progress");
    }

    /// Recall for the guest, if it holds the `memory` grant.
    pub(crate) fn recall(&mut self, query: &str, limit: u32) -> Result<Vec<Hit>, String> {
        if !self.effective.memory {
            return Err("this plugin has no `memory` grant".to_owned());
        }
        let Some(recall) = &self.recall else {
            return Err("this daemon has no memory to recall from".to_owned());
        };
        recall.recall(&self.scope, query, limit.min(RECALL_LIMIT))
    }

    /// An HTTP request for the guest, if its grants allow it.
    pub(crate) fn fetch(&mut self, request: net::Request) -> Result<net::Response, String> {
        net::fetch(&self.effective, &mut self.usage, request, self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_out_after_a_refused_growth_is_a_time_out_and_fuel_saturates() {
        let manifest: Manifest = toml::from_str("id = \"p\"\nversion = \"1\"\ndescription = \"x\"\n").unwrap();
        let effective = Effective::default();
        let budget = |err: wasmtime::Error, denied| match classify_with(
            err,
            denied,
            &effective,
            &manifest,
            "p.t",
            Instant::now(),
        ) {
            CallError::Budget { budget, .. } => budget,
            other => panic!("{other:?}"),
        };
        // The guest survived a refused growth, then ran out of time.
        assert_eq!(budget(Trap::Interrupt.into(), Some(64 << 20)), "wall_ms");
        // A trap the refusal explains (the guest aborted on it).
        assert_eq!(budget(Trap::UnreachableCodeReached.into(), Some(64 << 20)), "memory_mib");
        assert_eq!(budget(Trap::Interrupt.into(), None), "wall_ms");
        let unbounded = Effective { http_bytes: u64::MAX, ..Effective::default() };
        assert_eq!(hostcall_fuel(&unbounded), usize::MAX);
        assert_eq!(hostcall_fuel(&effective), 2 * RESULT_CAP);
    }

    #[test]
    fn guest_text_becomes_one_bounded_line() {
        assert_eq!(one_line("ok\nlevel=ERROR forged\r\u{1b}[2J", 100), "ok\\nlevel=ERROR forged\\r\\u{1b}[2J");
        assert_eq!(one_line("é".repeat(10).as_str(), 4), "éééé");
        assert_eq!(one_line("\n\n\n", 3), "\\n\\");
    }
}
