//! `engram doctor`: checks the environment and says how to fix what fails.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use engram_client::{Client, ClientError};
use engram_config::{ConfigError, HostEnv, Loaded, Loader, Paths};
use engram_services::health::{Health, Healthz};
use serde::Serialize;

use crate::cli::Cli;

/// How long a probe of the daemon or a remote endpoint waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours the width the table asks for.
        f.pad(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        })
    }
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Pass, detail: detail.into(), fix: None }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// Runs every check with a valid configuration.
pub fn run(loaded: &Loaded, paths: &Paths, json: bool) -> ExitCode {
    let sources: Vec<String> = loaded.sources.iter().map(ToString::to_string).collect();
    let mut checks = vec![Check::pass("config", sources.join("; "))];
    checks.extend(environment_checks(loaded, paths));
    report(&checks, json)
}

/// Reports the configuration error, then checks what it can with the
/// built-in defaults (and `--data-dir`).
pub fn run_without_config(cli: &Cli, env: &HostEnv, err: &ConfigError) -> ExitCode {
    let json = matches!(cli.command, crate::cli::Command::Doctor { json: true });
    let mut checks =
        vec![Check::fail("config", err.to_string(), "fix the key named above; config/default.toml documents each key")];
    let mut loader = Loader::new();
    if let Some(dir) = &cli.data_dir {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        loader = loader.set("storage.data_dir", dir.display().to_string(), engram_config::Origin::Cli("--data-dir"));
    }
    if let Ok(loaded) = loader.load()
        && let Ok(paths) = Paths::resolve(&loaded.config, env)
    {
        checks.extend(environment_checks(&loaded, &paths));
    }
    report(&checks, json)
}

fn environment_checks(loaded: &Loaded, paths: &Paths) -> Vec<Check> {
    vec![
        data_dir(paths),
        journal(paths),
        socket(paths),
        tcp(loaded, paths),
        embedder(loaded, paths),
        llm(loaded, paths),
        vector_store(loaded, paths),
        disk(&paths.data_dir),
    ]
}

fn report(checks: &[Check], json: bool) -> ExitCode {
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json {
        let value = serde_json::json!({ "ok": !failed, "checks": checks });
        println!("{value:#}");
    } else {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{:width$}  STATUS  DETAIL", "CHECK");
        for check in checks {
            let _ = writeln!(out, "{:width$}  {:6}  {}", check.name, check.status, check.detail);
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "{:width$}          fix: {fix}", "");
            }
        }
        let verdict = if failed { "some checks failed" } else { "all checks passed" };
        let _ = writeln!(out, "\n{verdict}");
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn data_dir(paths: &Paths) -> Check {
    let dir = &paths.data_dir;
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let probe = existing.join(format!(".engram-doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) if existing == dir => Check::pass("data dir", format!("{} (writable)", dir.display())),
        Ok(()) => Check::pass("data dir", format!("{} (will be created under {})", dir.display(), existing.display())),
        Err(err) => Check::fail(
            "data dir",
            format!("{} is not writable: {err}", existing.display()),
            "set storage.data_dir (or --data-dir) to a directory you can write",
        ),
    }
}

fn journal(paths: &Paths) -> Check {
    match engram_store::Store::inspect(&paths.journal) {
        Ok(None) => Check::pass(
            "journal",
            format!(
                "{} not created yet (schema {} on first start); SQLite {}",
                paths.journal.display(),
                engram_store::SCHEMA_VERSION,
                engram_store::rusqlite::version()
            ),
        ),
        Ok(Some(stats)) => Check::pass(
            "journal",
            format!(
                "{}: schema {}, last seq {}, {}, integrity ok; SQLite {}",
                stats.path.display(),
                stats.schema_version,
                stats.last_seq,
                human_bytes(stats.size_bytes),
                stats.sqlite_version
            ),
        ),
        Err(err) => Check::fail("journal", err.to_string(), "see the message; the journal was not modified"),
    }
}

fn socket(paths: &Paths) -> Check {
    let path = &paths.socket;
    let len = path.as_os_str().len();
    if len > engram_config::MAX_SOCKET_PATH {
        return Check::fail(
            "socket",
            format!("{} is {len} bytes, over the {} a socket allows", path.display(), engram_config::MAX_SOCKET_PATH),
            "set server.socket to a shorter path",
        );
    }
    match probe_daemon(path) {
        Ok(health) => {
            let failed: Vec<String> = health
                .parts
                .failed()
                .into_iter()
                .map(|(part, error)| format!("; its {part} failed: {error}"))
                .collect();
            Check::pass(
                "socket",
                format!(
                    "{}: a daemon is running and healthy (pid {}, {}){}",
                    path.display(),
                    health.pid,
                    health.version,
                    failed.concat()
                ),
            )
        }
        Err(ClientError::Operation { status, error }) => Check::warn(
            "socket",
            format!("{}: a daemon answered {status}: {}", path.display(), error.message),
            "see `engram serve` logs",
        ),
        Err(ClientError::Connect { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Check::pass("socket", format!("{} (no daemon running)", path.display()))
        }
        Err(ClientError::Connect { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            Check::pass("socket", format!("{}: stale socket file, will be replaced on start", path.display()))
        }
        // Something answers, but not as this version's daemon does: stuck,
        // or a daemon of another version.
        Err(err @ (ClientError::Transport { .. } | ClientError::Decode { .. })) => Check::warn(
            "socket",
            format!("{}: {err}", path.display()),
            "restart the daemon (`engram serve`); it may be of another version",
        ),
        Err(err) => Check::fail(
            "socket",
            format!("{}: {err}", path.display()),
            "make the socket's directory writable, or set server.socket",
        ),
    }
}

/// The daemon's health over its socket, within 3 s.
fn probe_daemon(path: &Path) -> Result<Health, ClientError> {
    let client = Client::unix(path);
    block_on(async {
        tokio::time::timeout(PROBE_TIMEOUT, client.call(&Healthz {})).await.unwrap_or_else(|_| {
            Err(ClientError::Transport { target: path.display().to_string(), message: "no answer within 3 s".into() })
        })
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => panic!("cannot start a runtime for the probe: {err}"),
    }
}

fn tcp(loaded: &Loaded, paths: &Paths) -> Check {
    use std::os::unix::fs::MetadataExt;
    let Some(addr) = loaded.config.server.tcp else {
        return Check::pass("tcp", "off (set server.tcp to serve a loopback port)");
    };
    match std::fs::metadata(&paths.token_file) {
        Ok(meta) if meta.mode() & 0o077 != 0 => Check::fail(
            "tcp",
            format!("{addr}: token file {} has mode {:o}", paths.token_file.display(), meta.mode() & 0o777),
            format!("chmod 600 {}", paths.token_file.display()),
        ),
        Ok(_) => Check::pass("tcp", format!("{addr}, token in {}", paths.token_file.display())),
        Err(_) => {
            Check::pass("tcp", format!("{addr}, token will be created in {} on start", paths.token_file.display()))
        }
    }
}

const FETCH_FIX: &str = "run scripts/fetch-models (or point models.dir / models.embedder / models.llm at the files)";

fn embedder(loaded: &Loaded, paths: &Paths) -> Check {
    let name = "embedder";
    let source = &loaded.config.models.embedder.source;
    let dir = match crate::models::resolve(source, paths) {
        Ok(dir) => dir,
        Err(err) => return Check::fail(name, err.to_string(), FETCH_FIX),
    };
    if !dir.is_dir() {
        return Check::fail(name, format!("{}: missing", dir.display()), FETCH_FIX);
    }
    // The header check names a truncated file plainly; loading proves the rest.
    let weights = dir.join("model.safetensors");
    if let Err(err) = safetensors_summary(&weights) {
        return Check::fail(name, format!("{}: {err}", weights.display()), FETCH_FIX);
    }
    match crate::models::load_embedder(&loaded.config, paths).and_then(|e| Ok((e.embed(&["doctor"])?, e))) {
        Ok((vectors, e)) => Check::pass(
            name,
            format!("{}: loads and embeds ({}-d, {} tokens max)", dir.display(), vectors[0].len(), e.max_tokens()),
        ),
        Err(err) => Check::fail(name, err.to_string(), FETCH_FIX),
    }
}

fn llm(loaded: &Loaded, paths: &Paths) -> Check {
    let name = "llm";
    let llm = &loaded.config.models.llm;
    if llm.backend == engram_config::LlmBackend::Openai {
        let url = llm.base_url.clone().unwrap_or_default();
        return match block_on(engram_models::RemoteLlm::probe(&url, PROBE_TIMEOUT)) {
            Ok(status) => Check::pass(name, format!("remote {url}: GET /models answered {status}")),
            Err(err) => {
                Check::fail(name, format!("remote {url}: {err}"), "start the server, or fix models.llm.base_url")
            }
        };
    }
    match crate::models::load_local(&loaded.config, paths) {
        Ok(model) => Check::pass(
            name,
            format!(
                "{}: loads ({}, context {} tokens, {} engine{})",
                model.source.display(),
                model.name,
                model.context(),
                model.engine(),
                if model.loaded == model.source { String::new() } else { ", converted to Q8_0 and cached".into() }
            ),
        ),
        Err(err) => Check::fail(name, err.to_string(), FETCH_FIX),
    }
}

fn vector_store(loaded: &Loaded, paths: &Paths) -> Check {
    let name = "vectors";
    let options = match engram_services::rag::options(&loaded.config, paths) {
        Ok(options) => options,
        Err(err) => return Check::fail(name, format!("{err:#}"), "fix retrieval.qdrant.api_key_file"),
    };
    match &options.vectors {
        engram_rag::VectorBackend::Edge => Check::pass(
            name,
            format!("qdrant-edge, embedded, under {}", engram_services::rag::index_dir(paths).display()),
        ),
        engram_rag::VectorBackend::Qdrant(server) => match engram_index::QdrantIndex::probe(server) {
            Ok(version) => Check::pass(name, format!("{version} at {}", server.url)),
            Err(err) => Check::fail(
                name,
                err.to_string(),
                "start the server, or fix retrieval.qdrant.url (the gRPC port, 6334 by default)",
            ),
        },
    }
}

/// Validates a safetensors file's header with the `safetensors` crate (the
/// parser candle loads it with: names, dtypes, shapes and contiguous
/// offsets) and that the tensors' bytes are exactly the file's, reading
/// the header only: (tensor count, file size).
fn safetensors_summary(path: &Path) -> Result<(usize, u64), String> {
    /// The crate's own limit on a header's size.
    const MAX_HEADER: u64 = 100_000_000;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    // The format: an 8-byte little-endian header length, the JSON header,
    // then the tensors' bytes.
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| "shorter than a safetensors header".to_owned())?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len.saturating_add(8) > size {
        return Err(format!("header length {header_len} does not fit the {size}-byte file"));
    }
    let mut header = vec![0u8; usize::try_from(header_len).map_err(|e| e.to_string())?];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| format!("invalid safetensors header: {e}"))?;
    let tensors = metadata.tensors().len();
    if tensors == 0 {
        return Err("holds no tensors".into());
    }
    let data = size - 8 - header_len;
    let needed = metadata.data_len() as u64;
    if needed > data {
        return Err(format!("its tensors end at byte {needed}, past the {data} data bytes (truncated file?)"));
    }
    if needed < data {
        return Err(format!("its tensors end at byte {needed}, before the last of the {data} data bytes"));
    }
    Ok((tensors, size))
}

fn disk(dir: &Path) -> Check {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(existing) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let detail = format!("{} free on {}", human_bytes(free), existing.display());
            if free < 512 << 20 {
                Check::fail("disk", detail, "free some space: models and indexes need at least 512 MiB")
            } else if free < 2 << 30 {
                Check::warn("disk", detail, "less than 2 GiB free: large ingests may run out")
            } else {
                Check::pass("disk", detail)
            }
        }
        Err(err) => Check::warn("disk", format!("cannot stat {}: {err}", existing.display()), "check the mount"),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use safetensors::{Dtype, tensor::TensorView};

    use super::*;

    /// A valid file of two tensors, written by the `safetensors` crate.
    fn valid() -> Vec<u8> {
        let weights: Vec<u8> = (0..24u8).collect(); // 2 × 3 f32
        let bias = [0u8; 6]; // 3 f16
        let tensors = [
            ("bias", TensorView::new(Dtype::F16, vec![3], &bias).unwrap()),
            ("weight", TensorView::new(Dtype::F32, vec![2, 3], &weights).unwrap()),
        ];
        let bytes = safetensors::serialize(tensors, None).unwrap();
        assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
        bytes
    }

    fn summary_of(bytes: &[u8]) -> Result<(usize, u64), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, bytes).unwrap();
        safetensors_summary(&path)
    }

    #[test]
    fn a_valid_file_is_summarized() {
        let bytes = valid();
        assert_eq!(summary_of(&bytes), Ok((2, bytes.len() as u64)));
    }

    #[test]
    fn a_truncated_file_is_named_as_such() {
        let bytes = valid();
        let err = summary_of(&bytes[..bytes.len() - 4]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        // Cut inside the header.
        let err = summary_of(&bytes[..20]).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        let err = summary_of(&bytes[..5]).unwrap_err();
        assert!(err.contains("shorter than a safetensors header"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = valid();
        bytes.extend_from_slice(b"junk");
        let err = summary_of(&bytes).unwrap_err();
        assert!(err.contains("before the last"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        let err = summary_of(b"this is not a safetensors file at all").unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        let mut bytes = 8u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{{{{{{{{");
        let err = summary_of(&bytes).unwrap_err();
        assert!(err.contains("invalid safetensors header"), "{err}");
        // JSON, but offsets that do not match the dtype and shape.
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0; 4]);
        let err = summary_of(&bytes).unwrap_err();
        assert!(err.contains("invalid safetensors header"), "{err}");
    }

    #[test]
    fn an_empty_file_of_tensors_is_refused() {
        let bytes = safetensors::serialize(Vec::<(&str, TensorView<'_>)>::new(), None).unwrap();
        assert_eq!(summary_of(&bytes), Err("holds no tensors".to_owned()));
        let err = safetensors_summary(Path::new("/nonexistent/model.safetensors")).unwrap_err();
        assert!(!err.is_empty());
    }
}
