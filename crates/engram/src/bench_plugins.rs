//! `engram bench plugins`: the plugin host against its bars, on components
//! built from `plugins/` (hostile fixtures included) in a private directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use engram_plugin_host::{CallError, PluginHost};
use serde_json::json;

use crate::bench::stats::Summary;

/// Options of `engram bench plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsBenchArgs {
    /// Calls per latency series.
    #[arg(long, default_value_t = 5000)]
    pub calls: usize,
    /// Runaway calls for the wall-budget series.
    #[arg(long, default_value_t = 1000)]
    pub runaways: usize,
    /// Wall budget (ms) given to the runaway loop for that series.
    #[arg(long, default_value_t = 10)]
    pub runaway_budget_ms: u64,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn row(what: &str, times: Vec<Duration>, bar: &str) {
    match Summary::of(times) {
        Some(s) => row_summary(what, &s, bar),
        None => println!("{what:<44} {:>9} {:>9} {:>9}   {bar}", "-", "-", "-"),
    }
}

fn row_summary(what: &str, s: &Summary, bar: &str) {
    println!("{what:<44} {:>9.1} {:>9.1} {:>9.1}   {bar}", micros(s.p50), micros(s.p99), micros(s.max));
}

/// Builds and installs the plugins with fixtures into a temporary directory.
/// The plugins are built from their sources, so this needs the checkout
/// this binary was built from.
fn install(dir: &Path) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-plugins");
    anyhow::ensure!(
        script.is_file(),
        "`engram bench plugins` builds the plugins from the source checkout, and {} is not there",
        script.display()
    );
    let status = std::process::Command::new(&script)
        .arg("--with-fixtures")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    Ok(())
}

/// Installs a copy of the hostile fixture under `id` with other budgets.
fn copy_hostile(dir: &Path, id: &str, wall: &str, memory: &str) -> anyhow::Result<()> {
    let folder = dir.join(id);
    std::fs::create_dir_all(&folder)?;
    std::fs::copy(dir.join("hostile/hostile.wasm"), folder.join(format!("{id}.wasm")))?;
    let text = std::fs::read_to_string(dir.join("hostile/plugin.toml"))?
        .replace("id = \"hostile\"", &format!("id = \"{id}\""))
        .replace("wall_ms = 200", wall)
        .replace("memory_mib = 16", memory);
    std::fs::write(folder.join("plugin.toml"), text)?;
    Ok(())
}

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Fixtures the host must refuse to load, and why.
const REFUSED_AT_LOAD: [&str; 4] = ["hostile-long", "hostile-sleepy", "hostile-many", "hostile-cyclic"];
/// Plugins whose calls block in a host call, for the blocking series.
const SLEEPERS: usize = 4;

/// `engram bench plugins`.
pub fn plugins(args: &PluginsBenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("engram-bench-plugins-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let dir: PathBuf = scratch.path().join("plugins");
    install(&dir)?;
    // The runaway series uses its own, shorter wall budget.
    copy_hostile(&dir, "runaway", &format!("wall_ms = {}", args.runaway_budget_ms), "memory_mib = 16")?;
    // Blocking guests, whose calls sleep in a host call for up to 5 s (their
    // budget): four plugins of 16 calls each.
    for copy in 0..SLEEPERS {
        copy_hostile(&dir, &format!("sleeper{copy}"), "wall_ms = 5000", "memory_mib = 16")?;
    }
    // Worst-case results need room to be built in.
    copy_hostile(&dir, "burst", "wall_ms = 5000", "memory_mib = 64")?;
    let host = Arc::new(PluginHost::new(None)?);
    let started = Instant::now();
    let report = host.load_dir(&dir);
    let load_time = started.elapsed();
    // The fixtures the host must refuse at load.
    let (refused, failed): (Vec<_>, Vec<_>) =
        report.failed.iter().partition(|(folder, _)| REFUSED_AT_LOAD.iter().any(|id| folder.ends_with(id)));
    anyhow::ensure!(failed.is_empty(), "plugins failed to load: {failed:?}");

    println!("plugin host: {} calls per series, 2 cores", args.calls);
    println!("{:<44} {:>9} {:>9} {:>9}   bar", "series (µs)", "p50", "p99", "max");
    let noop = "{}";
    for _ in 0..200 {
        host.call_unchecked("hostile.echo", noop)?;
    }
    let fresh: Vec<Duration> = (0..args.calls)
        .map(|_| {
            let started = Instant::now();
            host.call_unchecked("hostile.echo", noop).map(|_| started.elapsed())
        })
        .collect::<Result<_, _>>()?;
    row("fresh instance + call + drop", fresh, "p50 <= 40, p99 <= 100");
    let warm = host.warm_calls("hostile.echo", noop, args.calls)?;
    row("warm call on a live instance", warm, "<= 1");
    let arguments = json!({});
    let checked: Vec<Duration> = (0..args.calls)
        .map(|_| {
            let started = Instant::now();
            host.call_tool_blocking("hostile.echo", &arguments).map(|_| started.elapsed())
        })
        .collect::<Result<_, _>>()?;
    row("call_tool incl. schema validation", checked, "p50 <= 100");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let routed: Vec<Duration> = runtime.block_on(async {
        let mut times = Vec::with_capacity(args.calls);
        for _ in 0..args.calls {
            let started = Instant::now();
            host.call_tool("hostile.echo", json!({})).await?;
            times.push(started.elapsed());
        }
        Ok::<_, CallError>(times)
    })?;
    row("call_tool async (blocking pool) round trip", routed, "");

    // Runaway loops under load: two threads keep calling meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (Arc::clone(&host), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = host.call_unchecked("calc.evaluate", r#"{"expression": "2^200 / 3^50"}"#);
                }
            })
        })
        .collect();
    let mut overshoot = Vec::with_capacity(args.runaways);
    for _ in 0..args.runaways {
        let started = Instant::now();
        match host.call_unchecked("runaway.spin", noop) {
            Err(CallError::Budget { .. }) => {}
            other => anyhow::bail!("the runaway loop was not stopped by its budget: {other:?}"),
        }
        overshoot.push(started.elapsed().saturating_sub(Duration::from_millis(args.runaway_budget_ms)));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        let _ = thread.join();
    }
    row(&format!("runaway stop past a {} ms budget, loaded", args.runaway_budget_ms), overshoot, "p99 <= 5000");

    // Memory bomb: peak RSS growth against the 16 MiB cap.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = kib("VmHWM:");
    let result = host.call_unchecked("hostile.allocate", noop);
    let growth = kib("VmHWM:").saturating_sub(before);
    let trapped = matches!(&result, Err(CallError::Budget { budget, .. }) if budget == "memory_mib");
    println!(
        "memory bomb: {} at the 16 MiB cap; peak host RSS growth {:.1} MiB (bar: <= 18 MiB)",
        if trapped { "trapped".to_owned() } else { format!("NOT trapped ({result:?})") },
        growth as f64 / 1024.0
    );

    // The hostile suite: every attack must fail cleanly.
    let attacks: [(&str, &str); 15] = [
        ("spin", "{}"),
        ("allocate", "{}"),
        ("recurse", "{}"),
        ("read_file", r#"{"path": "../../../../etc/passwd"}"#),
        ("read_file", r#"{"path": "/etc/passwd"}"#),
        ("env", "{}"),
        ("connect", r#"{"address": "127.0.0.1:22"}"#),
        ("connect", r#"{"address": "169.254.169.254:80"}"#),
        ("flood", r#"{"bytes": 6000000}"#),
        // Requested in its manifest, never granted here.
        ("write_file", r#"{"path": "/data/x", "text": "x"}"#),
        ("fetch", r#"{"url": "http://169.254.169.254/latest/meta-data/"}"#),
        ("fetch", r#"{"url": "http://127.0.0.1:22/"}"#),
        ("recall", r#"{"query": "secrets"}"#),
        ("hoard", "{}"),
        ("shout", r#"{"bytes": 9437184}"#),
    ];
    let mut blocked = 0;
    for (tool, arguments) in attacks {
        let outcome = host.call_unchecked(&format!("hostile.{tool}"), arguments);
        let ok = match (tool, &outcome) {
            ("env", Ok(text)) => text == "[]",
            (_, Err(_)) => true,
            _ => false,
        };
        blocked += usize::from(ok);
        if !ok {
            println!("NOT BLOCKED: hostile.{tool} {arguments}: {outcome:?}");
        }
    }
    for id in REFUSED_AT_LOAD {
        match refused.iter().find(|(folder, _)| folder.ends_with(id)) {
            Some((_, error)) => {
                blocked += 1;
                println!("refused at load: {id}: {error}");
            }
            None => println!("NOT BLOCKED: {id} loaded"),
        }
    }
    println!(
        "loading all {} plugin folders (sleeping describe included): {:.1} s",
        report.loaded.len() + report.failed.len(),
        load_time.as_secs_f64()
    );
    let alive = host.call_unchecked("hostile.echo", r#"{"alive": true}"#).is_ok();
    println!("hostile suite: {blocked}/{} blocked; host still serving: {alive}", attacks.len() + REFUSED_AT_LOAD.len());

    blocking_series(&host, args.calls)?;
    result_burst(&host)?;
    drop(host);
    drop(scratch);
    Ok(())
}

/// `calc.evaluate` idle, then while 64 calls (16 per sleeper plugin) sleep
/// in a host call until their 5 s budget ends.
fn blocking_series(host: &Arc<PluginHost>, calls: usize) -> anyhow::Result<()> {
    let arguments = json!({"expression": "2^200 / 3^50"});
    let time_calc = |calls: usize| -> anyhow::Result<Vec<Duration>> {
        (0..calls)
            .map(|_| {
                let started = Instant::now();
                host.call_tool_blocking("calc.evaluate", &arguments).map(|_| started.elapsed())
            })
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    };
    let idle = time_calc(calls)?;
    let sleepers: Vec<_> = (0..SLEEPERS * engram_plugin_host::PLUGIN_CALLS)
        .map(|i| {
            let host = Arc::clone(host);
            std::thread::spawn(move || {
                let started = Instant::now();
                let outcome = host.call_tool_blocking(&format!("sleeper{}.sleep", i % SLEEPERS), &json!({}));
                (outcome, started.elapsed())
            })
        })
        .collect();
    // Measured while they wait (each until its 5 s budget).
    let started = Instant::now();
    let mut loaded = Vec::new();
    while started.elapsed() < Duration::from_secs(4) && loaded.len() < calls {
        loaded.extend(time_calc(100)?);
    }
    let mut ended = 0;
    let mut longest = Duration::ZERO;
    for sleeper in sleepers {
        let (outcome, took) = sleeper.join().map_err(|_| anyhow::anyhow!("a sleeper thread panicked"))?;
        ended += usize::from(matches!(&outcome, Err(CallError::Budget { budget, .. }) if budget == "wall_ms"));
        longest = longest.max(took);
    }
    let (idle, loaded) = (Summary::of(idle), Summary::of(loaded));
    if let (Some(idle), Some(loaded)) = (idle, loaded) {
        row_summary("calc.evaluate idle", &idle, "");
        row_summary("calc.evaluate, 64 calls blocked in host calls", &loaded, "p99 <= 2x idle");
        println!(
            "blocking calls: {ended}/{} ended at their 5 s budget (longest {:.2} s); calc p99 ratio loaded/idle {:.2}",
            SLEEPERS * engram_plugin_host::PLUGIN_CALLS,
            longest.as_secs_f64(),
            loaded.p99.as_secs_f64() / idle.p99.as_secs_f64()
        );
    }
    Ok(())
}

/// Daemon RSS before and after a burst of worst-case results (4 MB of
/// text; 250,000 values), each parsed and checked like a real call.
fn result_burst(host: &Arc<PluginHost>) -> anyhow::Result<()> {
    let calls: [(&str, serde_json::Value); 2] =
        [("burst.flood", json!({"bytes": 4_000_000})), ("burst.numbers", json!({"count": 250_000}))];
    for (tool, arguments) in &calls {
        host.call_tool_blocking(tool, arguments)?;
    }
    let idle = kib("VmRSS:");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let host = Arc::clone(host);
            let calls = calls.clone();
            std::thread::spawn(move || {
                for _ in 0..16 {
                    for (tool, arguments) in &calls {
                        host.call_tool_blocking(tool, arguments)?;
                    }
                }
                Ok::<_, CallError>(())
            })
        })
        .collect();
    let mut peak = 0;
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a burst thread panicked"))??;
        peak = peak.max(kib("VmRSS:"));
    }
    let after = kib("VmRSS:");
    println!(
        "worst-case results, 256 calls on 8 threads: RSS idle {:.1} MiB, after {:.1} MiB ({:+.1}%; bar: within 10%)",
        idle as f64 / 1024.0,
        after as f64 / 1024.0,
        (after as f64 / idle as f64 - 1.0) * 100.0
    );
    Ok(())
}
