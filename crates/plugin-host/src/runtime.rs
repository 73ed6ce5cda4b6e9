//! The wasmtime side: one engine, the compiled-component cache, and a fresh
//! sandboxed store per call.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, StoreContextMut, Trap,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, DynPollable, OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::{CallError, ComponentError, HostError};
use crate::grants::Effective;
use crate::manifest::{Budgets, FileMode, Manifest};
use crate::net;
use crate::quota::{self, Allowance, Counted, Quotas};
use crate::recall::{Hit, Recall, Scope};
use crate::wit::{self, CallContext, LogLevel, Pre, Spec, ToolFailure};

/// Concurrent calls the pooling allocator has slots for: eight plugins
/// each running their most calls at once ([`crate::PLUGIN_CALLS`]).
const SLOTS: u32 = 128;
/// Bytes of stdout and of stderr kept per call.
const OUTPUT_CAP: usize = 16 << 10;
/// Largest result a call may return.
const RESULT_CAP: usize = 4 << 20;
/// Most JSON values a result may hold: parsed, each costs the host tens of
/// bytes whatever its text, so a 4 MB result of tiny values would otherwise
/// take ~60 MB of host memory outside every budget.
const RESULT_VALUES: usize = 1 << 18;
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
/// Live resources (streams, pollables, files) one call may hold: well
/// under the usual limit of 1,024 open files, so no call can stop the
/// daemon accepting connections.
const RESOURCES: usize = 256;
/// Largest `wasi:random` request the host fills (it allocates the bytes).
const RANDOM_CAP: u64 = 1 << 20;
/// Guest linear memory, all calls together: what the per-call budgets may
/// add up to before further growth is refused.
pub(crate) const DAEMON_MEMORY: usize = 4 << 30;
/// The WASI interfaces whose blocking waits are bounded here (wasmtime-wasi
/// 48 defines them at this version; guests' older 0.2 imports resolve to it).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";
/// The WASI filesystem interface, for the operation refused here.
const WASI_FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";

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
    /// Bytes of guest linear memory in use, over every live call.
    memory: Arc<AtomicUsize>,
    /// The disk quotas of writable granted directories.
    quotas: Quotas,
}

/// Keeps glibc's mmap threshold at its initial 128 KiB. By default glibc
/// raises it to the size of each large block freed, so after one 4 MiB
/// result every later one is carved from the heap and arenas of whichever
/// thread parsed it, and stays in the daemon's RSS after the call. Fixed,
/// blocks of 128 KiB and up (results, their parsed values) are mapped and
/// returned to the system when freed.
fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes an allocator tunable; it is called
        // once, and glibc serializes it against allocations.
        #[allow(unsafe_code)]
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        });
    }
}

impl Runtime {
    pub(crate) fn new(cache_dir: Option<PathBuf>) -> Result<Self, HostError> {
        return_large_blocks();
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(SLOTS)
            .total_core_instances(SLOTS * 8)
            .total_memories(SLOTS)
            .total_tables(SLOTS * 4)
            // One component may not take the pool's slots from the others
            // (a Rust component has one memory, a few core instances).
            .max_memories_per_component(4)
            .max_core_instances_per_component(32)
            .max_tables_per_component(16)
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
        bound_host_calls(&mut linker).map_err(|err| HostError::Link(format!("WASI: {err:#}")))?;
        wit::add_to_linker(&mut linker).map_err(|err| HostError::Link(format!("{err:#}")))?;
        Ok(Self { engine, linker, cache_dir, epoch_start, epoch, memory: Arc::default(), quotas: Quotas::default() })
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
        wasi.stdout(stdout.clone()).stderr(stderr.clone()).max_random_size(RANDOM_CAP);
        // Each writable directory's quota, shared with the other calls
        // writing there (read-only once full).
        let mut quotas = Vec::new();
        for dir in &setup.effective.files {
            let mut perms = if dir.mode == FileMode::Write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            if dir.mode == FileMode::Write {
                match self.quotas.join(&dir.host, dir.quota) {
                    Some(quota) => quotas.push(quota),
                    None => {
                        tracing::warn!(%tool, dir = %dir.host.display(), quota = dir.quota, "granted directory full: read-only for this call");
                        perms = FsPerms::ReadOnly;
                    }
                }
            }
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|err| CallError::Crashed {
                tool: tool.to_owned(),
                message: format!("the granted directory {} cannot be opened: {err:#}", dir.host.display()),
            })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES);
        let state = State {
            wasi: wasi.build(),
            table,
            limiter: Limiter {
                cap: (manifest.budgets.memory_mib << 20) as usize,
                used: 0,
                daemon: Arc::clone(&self.memory),
                denied: None,
            },
            stdout,
            stderr,
            tool: tool.to_owned(),
            logged: 0,
            effective: Arc::clone(setup.effective),
            deadline,
            usage: net::Usage::default(),
            recall: setup.recall.clone(),
            scope: setup.scope.clone(),
            allowance: Arc::new(Allowance::new(quotas)),
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
            Ok(Ok(output)) if json_values(&output) > RESULT_VALUES => Err(CallError::Budget {
                tool: name.to_owned(),
                budget: "output_values".to_owned(),
                limit: RESULT_VALUES as u64,
                used: json_values(&output) as u64,
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
    denied: Option<Denied>,
    effective: &Effective,
    manifest: &Manifest,
    tool: &str,
    started: Instant,
) -> CallError {
    // A host call that waited until the deadline ends the call like an
    // epoch interrupt does.
    let trap = err.downcast_ref::<Trap>().copied().or_else(|| err.is::<DeadlineReached>().then_some(Trap::Interrupt));
    if let (Some(denied), false) = (denied, trap == Some(Trap::Interrupt)) {
        let mib = |bytes: usize| (bytes as u64).div_ceil(1 << 20);
        let (budget, limit, used) = match denied {
            Denied::Call(total) => ("memory_mib", manifest.budgets.memory_mib, mib(total)),
            Denied::Daemon(total) => ("daemon_memory_mib", mib(DAEMON_MEMORY), mib(total)),
        };
        return CallError::Budget { tool: tool.to_owned(), budget: budget.to_owned(), limit, used };
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

/// How many JSON values `text` holds, counting containers and separators
/// outside strings (exact for valid JSON, an estimate otherwise): what
/// parsing it will cost, whatever its length.
fn json_values(text: &str) -> usize {
    let (mut values, mut in_string, mut escaped) = (1, false, false);
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                // `,` starts another value; `[` and `{` are one, and may
                // hold one more (`[]`, `{}` are counted one too many).
                b',' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    values
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
    /// What the call may still write to its granted directories.
    allowance: Arc<Allowance>,
}

/// A file's output stream just opened at `position`, wrapped to be
/// charged for what it writes.
fn counted(
    table: &mut ResourceTable,
    opened: Result<Resource<DynOutputStream>, wasmtime_wasi::p2::FsError>,
    allowance: Arc<Allowance>,
    position: u64,
) -> wasmtime::Result<(Result<Resource<DynOutputStream>, ErrorCode>,)> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(err) => return Ok((Err(err.downcast()?),)),
    };
    let slot: &mut DynOutputStream = table.get_mut(&stream)?;
    let inner = std::mem::replace(slot, Box::new(Capture::default()));
    // The block `position` falls in is the file's already, if it has one.
    let charged_to = position.div_ceil(quota::BLOCK).saturating_mul(quota::BLOCK);
    *slot = Box::new(Counted { inner, allowance, position, charged_to });
    Ok((Ok(stream),))
}

/// A filesystem result as the guest gets it: its error code, or a trap.
fn to_guest<T>(result: Result<T, wasmtime_wasi::p2::FsError>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(err) => Ok((Err(err.downcast()?),)),
    }
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

/// The memory budget of one call, over all of its linear memories (a
/// component may declare several), within the daemon-wide cap; remembers a
/// refused growth so the error can say so.
struct Limiter {
    /// The call's budget, in bytes.
    cap: usize,
    /// Bytes its memories hold now.
    used: usize,
    /// Bytes every live call's memories hold ([`DAEMON_MEMORY`] at most).
    daemon: Arc<AtomicUsize>,
    denied: Option<Denied>,
}

/// Which cap refused a memory growth, and the total it would have made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// The call's own `memory_mib`.
    Call(usize),
    /// The daemon-wide [`DAEMON_MEMORY`].
    Daemon(usize),
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Past its declared maximum the growth fails anyway: charge nothing.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        // Also called for each memory's initial size (current 0).
        let grow = desired.saturating_sub(current);
        let total = self.used.saturating_add(grow);
        if total > self.cap {
            self.denied = Some(Denied::Call(total));
            return Ok(false);
        }
        let before = self.daemon.fetch_add(grow, Ordering::AcqRel);
        if before.saturating_add(grow) > DAEMON_MEMORY {
            self.daemon.fetch_sub(grow, Ordering::AcqRel);
            self.denied = Some(Denied::Daemon(before.saturating_add(grow)));
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.daemon.fetch_sub(self.used, Ordering::AcqRel);
    }
}

/// A host call ended at the call's deadline: the call is over, like an
/// epoch interrupt ends running guest code.
#[derive(Debug)]
struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call's wall budget ended while it waited in a host call")
    }
}

impl std::error::Error for DeadlineReached {}

/// Waits for `future` until `deadline` on WASI's runtime; past it, the call
/// ends with [`DeadlineReached`].
fn until<F: Future>(deadline: Instant, future: F) -> wasmtime::Result<F::Output> {
    wasmtime_wasi::runtime::in_tokio(async move { tokio::time::timeout_at(deadline.into(), future).await })
        .map_err(|_| wasmtime::Error::new(DeadlineReached))
}

/// Replaces WASI's blocking waits (`poll`, `pollable.block`: sleeps, timers,
/// waiting on streams) with ones that end at the call's deadline, and
/// refuses symlink creation. Epoch
/// interruption stops only running guest code; a guest parked in a host
/// call would otherwise hold its thread and pool slot for as long as it
/// asked.
fn bound_host_calls(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi_io::bindings::wasi::io::poll::{Host, HostPollable};
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_IO_POLL)?;
    poll.func_wrap("poll", |mut store: StoreContextMut<'_, State>, (pollables,): (Vec<Resource<DynPollable>>,)| {
        let state = store.data_mut();
        Ok((until(state.deadline, Host::poll(&mut state.table, pollables))??,))
    })?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, State>, (pollable,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            until(state.deadline, HostPollable::block(&mut state.table, pollable))?
        },
    )?;
    // Symlinks: the sandbox never follows one out of a granted directory,
    // but the host's own tools (an `engram ingest` of that directory, a
    // backup) would. A plugin may not create them.
    let mut filesystem = linker.instance(WASI_FILESYSTEM)?;
    filesystem.func_wrap(
        "[method]descriptor.symlink-at",
        |_: StoreContextMut<'_, State>, _: (Resource<Descriptor>, String, String)| {
            Ok((Err::<(), _>(ErrorCode::NotPermitted),))
        },
    )?;
    // Writes to granted directories: charged against their quotas.
    filesystem.func_wrap(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, State>, (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            let state = store.data_mut();
            if !state.allowance.charge(quota::blocks(offset, buffer.len() as u64)) {
                return Ok((Err(ErrorCode::InsufficientSpace),));
            }
            let deadline = state.deadline;
            let mut files = WasiFilesystemView::filesystem(state);
            to_guest(until(deadline, HostDescriptor::write(&mut files, fd, buffer, offset))?)
        },
    )?;
    filesystem.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, State>, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let allowance = Arc::clone(&state.allowance);
            let mut files = WasiFilesystemView::filesystem(state);
            let opened = HostDescriptor::write_via_stream(&mut files, fd, offset);
            counted(files.table, opened, allowance, offset)
        },
    )?;
    filesystem.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, State>, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let (allowance, deadline) = (Arc::clone(&state.allowance), state.deadline);
            let mut files = WasiFilesystemView::filesystem(state);
            let size = match until(deadline, HostDescriptor::stat(&mut files, Resource::new_borrow(fd.rep())))? {
                Ok(stat) => stat.size,
                Err(err) => return Ok((Err(err.downcast()?),)),
            };
            let opened = HostDescriptor::append_via_stream(&mut files, fd);
            counted(files.table, opened, allowance, size)
        },
    )?;
    filesystem.func_wrap(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, State>, (fd, size): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let (allowance, deadline) = (Arc::clone(&state.allowance), state.deadline);
            let mut files = WasiFilesystemView::filesystem(state);
            let now = match until(deadline, HostDescriptor::stat(&mut files, Resource::new_borrow(fd.rep())))? {
                Ok(stat) => stat.size,
                Err(err) => return Ok((Err(err.downcast()?),)),
            };
            if size > now && !allowance.charge(quota::blocks(now, size - now)) {
                return Ok((Err(ErrorCode::InsufficientSpace),));
            }
            to_guest(until(deadline, HostDescriptor::set_size(&mut files, fd, size))?)
        },
    )?;
    // Each new file, directory or link takes at least a block (and an inode).
    filesystem.func_wrap(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, State>,
         (fd, path_flags, path, open, flags): (Resource<Descriptor>, PathFlags, String, OpenFlags, DescriptorFlags)| {
            let state = store.data_mut();
            if open.contains(OpenFlags::CREATE) && !state.allowance.charge(quota::BLOCK) {
                return Ok((Err(ErrorCode::InsufficientSpace),));
            }
            let deadline = state.deadline;
            let mut files = WasiFilesystemView::filesystem(state);
            to_guest(until(deadline, HostDescriptor::open_at(&mut files, fd, path_flags, path, open, flags))?)
        },
    )?;
    filesystem.func_wrap(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, State>, (fd, path): (Resource<Descriptor>, String)| {
            let state = store.data_mut();
            if !state.allowance.charge(quota::BLOCK) {
                return Ok((Err(ErrorCode::InsufficientSpace),));
            }
            let deadline = state.deadline;
            let mut files = WasiFilesystemView::filesystem(state);
            to_guest(until(deadline, HostDescriptor::create_directory_at(&mut files, fd, path))?)
        },
    )?;
    filesystem.func_wrap(
        "[method]descriptor.link-at",
        |mut store: StoreContextMut<'_, State>,
         (fd, old_flags, old_path, to, new_path): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            let state = store.data_mut();
            if !state.allowance.charge(quota::BLOCK) {
                return Ok((Err(ErrorCode::InsufficientSpace),));
            }
            let deadline = state.deadline;
            let mut files = WasiFilesystemView::filesystem(state);
            to_guest(until(deadline, HostDescriptor::link_at(&mut files, fd, old_flags, old_path, to, new_path))?)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
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
        // The daemon's memory may be busy (a lock, a long ingest): wait for
        // it only within the call's budget.
        let (recall, scope, query) = (Arc::clone(recall), self.scope.clone(), query.to_owned());
        crate::offload::until(self.deadline, "memory recall", move || {
            recall.recall(&scope, &query, limit.min(RECALL_LIMIT))
        })?
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
        assert_eq!(budget(Trap::Interrupt.into(), Some(Denied::Call(64 << 20))), "wall_ms");
        assert_eq!(budget(wasmtime::Error::new(DeadlineReached), Some(Denied::Call(64 << 20))), "wall_ms");
        // A trap the refusal explains (the guest aborted on it).
        assert_eq!(budget(Trap::UnreachableCodeReached.into(), Some(Denied::Call(64 << 20))), "memory_mib");
        assert_eq!(budget(Trap::UnreachableCodeReached.into(), Some(Denied::Daemon(1 << 33))), "daemon_memory_mib");
        assert_eq!(budget(Trap::Interrupt.into(), None), "wall_ms");
        let unbounded = Effective { http_bytes: u64::MAX, ..Effective::default() };
        assert_eq!(hostcall_fuel(&unbounded), usize::MAX);
        assert_eq!(hostcall_fuel(&effective), 2 * RESULT_CAP);
    }

    #[test]
    fn json_values_are_counted_outside_strings() {
        assert_eq!(json_values("42"), 1);
        assert_eq!(json_values("[0,0,0]"), 4);
        assert_eq!(json_values(r#"{"a":[1,2],"b":"x,[{\",\"}"}"#), 5);
        let many = serde_json::to_string(&vec![0; 300_000]).unwrap();
        assert!(json_values(&many) > RESULT_VALUES);
        let prose = serde_json::to_string(&"word, ".repeat(500_000)).unwrap();
        assert_eq!(json_values(&prose), 1);
    }

    #[test]
    fn the_memory_budget_counts_every_memory_of_a_call_and_every_call() {
        let daemon = Arc::new(AtomicUsize::new(0));
        let limiter = |cap: usize| Limiter { cap, used: 0, daemon: Arc::clone(&daemon), denied: None };
        let mut call = limiter(32 << 20);
        assert!(call.memory_growing(0, 20 << 20, None).unwrap());
        // A second memory of the same call: 20 + 20 MiB is over 32.
        assert!(!call.memory_growing(0, 20 << 20, None).unwrap());
        assert_eq!(call.denied, Some(Denied::Call(40 << 20)));
        assert!(call.memory_growing(0, 10 << 20, None).unwrap());
        assert_eq!(daemon.load(Ordering::Acquire), 30 << 20);
        // Other calls hold nearly all of the daemon's cap.
        daemon.fetch_add(DAEMON_MEMORY - (31 << 20), Ordering::AcqRel);
        let mut other = limiter(32 << 20);
        assert!(!other.memory_growing(0, 2 << 20, None).unwrap());
        assert_eq!(other.denied, Some(Denied::Daemon(DAEMON_MEMORY + (1 << 20))));
        drop((call, other));
        assert_eq!(daemon.load(Ordering::Acquire), DAEMON_MEMORY - (31 << 20));
    }

    #[test]
    fn guest_text_becomes_one_bounded_line() {
        assert_eq!(one_line("ok\nlevel=ERROR forged\r\u{1b}[2J", 100), "ok\\nlevel=ERROR forged\\r\\u{1b}[2J");
        assert_eq!(one_line("é".repeat(10).as_str(), 4), "éééé");
        assert_eq!(one_line("\n\n\n", 3), "\\n\\");
    }
}
