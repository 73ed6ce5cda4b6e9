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
        Some(s) => {
            println!("{what:<44} {:>9.1} {:>9.1} {:>9.1}   {bar}", micros(s.p50), micros(s.p99), micros(s.max))
        }
        None => println!("{what:<44} {:>9} {:>9} {:>9}   {bar}", "-", "-", "-"),
    }
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

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// `engram bench plugins`.
pub fn plugins(args: &PluginsBenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("engram-bench-plugins-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let dir: PathBuf = scratch.path().join("plugins");
    install(&dir)?;
    // The runaway series uses its own, shorter wall budget: a copy of the
    // hostile fixture under the id `runaway`.
    let runaway = dir.join("runaway");
    std::fs::create_dir_all(&runaway)?;
    std::fs::copy(dir.join("hostile/hostile.wasm"), runaway.join("runaway.wasm"))?;
    let text = std::fs::read_to_string(dir.join("hostile/plugin.toml"))?
        .replace("id = \"hostile\"", "id = \"runaway\"")
        .replace("wall_ms = 200", &format!("wall_ms = {}", args.runaway_budget_ms));
    std::fs::write(runaway.join("plugin.toml"), text)?;
    let host = Arc::new(PluginHost::new(None)?);
    let report = host.load_dir(&dir);
    // The one fixture the host must refuse at load: a tool description over the limit.
    let (refused, failed): (Vec<_>, Vec<_>) =
        report.failed.iter().partition(|(folder, _)| folder.ends_with("hostile-long"));
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
    if refused.len() == 1 {
        blocked += 1;
    } else {
        println!("NOT BLOCKED: hostile-long (a tool description over the limit) loaded");
    }
    let alive = host.call_unchecked("hostile.echo", r#"{"alive": true}"#).is_ok();
    println!("hostile suite: {blocked}/{} blocked; host still serving: {alive}", attacks.len() + 1);
    drop(host);
    drop(scratch);
    Ok(())
}
