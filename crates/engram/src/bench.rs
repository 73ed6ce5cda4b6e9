//! `engram bench`: latency of a running daemon, measured from outside.

use std::time::{Duration, Instant};

use anyhow::Context;
use engram_config::{Loaded, Paths};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Which transport and connection reuse one series measures.
#[derive(Debug, Clone, Copy)]
enum Mode {
    UnixKeepAlive,
    UnixFresh,
    TcpKeepAlive,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::UnixKeepAlive => "unix socket, keep-alive",
            Self::UnixFresh => "unix socket, new connection",
            Self::TcpKeepAlive => "tcp + token, keep-alive",
        }
    }
}

struct Series {
    mode: Mode,
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Series {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// `GET /healthz` `requests` times per mode against the running daemon,
/// after `warmup` unmeasured requests, and prints p50/p90/p99/max.
pub fn healthz(loaded: &Loaded, paths: &Paths, requests: usize, warmup: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let socket = &paths.socket;
        tokio::net::UnixStream::connect(socket)
            .await
            .with_context(|| format!("no daemon answers on {}: start `engram serve` first", socket.display()))?;
        let unix = Target::Unix(socket.clone());
        let mut series = vec![
            measure(Mode::UnixKeepAlive, &unix, requests, warmup).await?,
            measure(Mode::UnixFresh, &unix, requests, warmup).await?,
        ];
        if let Some(addr) = loaded.config.server.tcp {
            let token = std::fs::read_to_string(&paths.token_file)
                .with_context(|| format!("cannot read the token from {}", paths.token_file.display()))?;
            let target = Target::Tcp(addr, token.trim().to_owned());
            series.push(measure(Mode::TcpKeepAlive, &target, requests, warmup).await?);
        }
        print(&series, requests);
        Ok(())
    })
}

enum Target {
    Unix(std::path::PathBuf),
    Tcp(std::net::SocketAddr, String),
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    match target {
        Target::Unix(path) => client(tokio::net::UnixStream::connect(path).await?).await,
        Target::Tcp(addr, _) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            client(stream).await
        }
    }
}

async fn client<S>(stream: S) -> anyhow::Result<SendRequest<Empty<Bytes>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, target: &Target) -> anyhow::Result<()> {
    let mut request = hyper::Request::get("/healthz");
    request = match target {
        Target::Unix(_) => request.header("host", "localhost"),
        Target::Tcp(addr, token) => {
            request.header("host", addr.to_string()).header("authorization", format!("Bearer {token}"))
        }
    };
    let response = sender.send_request(request.body(Empty::new())?).await?;
    let status = response.status();
    response.into_body().collect().await?;
    anyhow::ensure!(status.is_success(), "/healthz answered {status}");
    Ok(())
}

async fn measure(mode: Mode, target: &Target, requests: usize, warmup: usize) -> anyhow::Result<Series> {
    let fresh = matches!(mode, Mode::UnixFresh);
    let mut sender = connect(target).await?;
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for i in 0..warmup + requests {
        let t0 = Instant::now();
        if fresh {
            sender = connect(target).await?;
        }
        get(&mut sender, target).await?;
        if i >= warmup {
            latencies.push(t0.elapsed());
        }
    }
    Ok(Series { mode, latencies, wall: started.elapsed() })
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn print(series: &[Series], requests: usize) {
    println!("GET /healthz, {requests} sequential requests per row (one client)");
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "mode", "p50", "p90", "p99", "max", "req/s", "p50 vs row 1"
    );
    let base = series.first().map(|s| s.quantile(0.5)).unwrap_or_default();
    for s in series {
        let p50 = s.quantile(0.5);
        let rate = s.latencies.len() as f64 / s.wall.as_secs_f64();
        println!(
            "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>11.2}x",
            s.mode.label(),
            micros(p50),
            micros(s.quantile(0.9)),
            micros(s.quantile(0.99)),
            micros(s.quantile(1.0)),
            rate,
            p50.as_secs_f64() / base.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    }
}
