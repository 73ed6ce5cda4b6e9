//! Helpers for end-to-end tests: a sandboxed `engram` process on a temp data
//! dir, and the project's client (`engram-client`) over its Unix socket or
//! TCP port.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use engram_client::Client;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_engram");

/// A private home for one test: data dir, socket, config files.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self { dir: tempfile::Builder::new().prefix("engram-e2e").tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Where the daemon's socket goes: `$XDG_RUNTIME_DIR/engram/engram.sock`.
    pub fn socket(&self) -> PathBuf {
        self.path().join("run").join("engram").join("engram.sock")
    }

    /// `engram ARGS --data-dir <sandbox>/data` with a clean environment:
    /// HOME and XDG dirs inside the sandbox, no inherited ENGRAM_* variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--data-dir").arg(self.data_dir());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ENGRAM_") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        cmd.env("HOME", self.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.path().join("run"))
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `engram ARGS` to completion.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        cmd.output().expect("run engram")
    }

    /// Starts `engram serve` with extra environment variables.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn_with(&[], env)
    }

    /// Starts `engram serve ARGS` with extra environment variables.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(self.path().join("run")).expect("runtime dir");
        let stderr_path = self.path().join(format!("serve-{}.log", unique()));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let mut cmd = self.command(&["serve"]);
        cmd.args(args).envs(env.iter().copied()).stdout(Stdio::null()).stderr(stderr);
        let child = cmd.spawn().expect("spawn engram serve");
        Daemon { child, socket: self.socket(), stderr_path }
    }

    /// Starts a daemon and waits until it answers on its socket.
    pub fn start(&self, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = self.spawn(env);
        daemon.wait_ready();
        daemon
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

/// A running `engram serve`; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    stderr_path: PathBuf,
}

impl Daemon {
    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("engram serve exited early with {status}:\n{}", self.stderr());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "daemon not ready after 60 s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the daemon's log contains `needle`, woken by inotify on
    /// each write to it; fails the test after `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        use rustix::fs::inotify;
        let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).expect("inotify");
        inotify::add_watch(&watch, &self.stderr_path, inotify::WatchFlags::MODIFY).expect("watch the log");
        let deadline = Instant::now() + limit;
        // Checked after the watch exists, so no write slips between.
        while !self.stderr().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "`{needle}` not logged within {limit:?}:\n{}", self.stderr());
            let timeout = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
            let mut fds = [PollFd::new(&watch, PollFlags::IN)];
            poll(&mut fds, Some(&timeout)).expect("poll");
            // Drain the events; the content check above decides.
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut events = inotify::Reader::new(&watch, &mut buf);
            while events.next().is_ok() {}
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// Waits for the process to exit, failing the test after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        // A pidfd becomes readable when the process exits: wait on that.
        let pid = rustix::process::Pid::from_child(&self.child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open");
        let timeout = Timespec { tv_sec: limit.as_secs() as i64, tv_nsec: i64::from(limit.subsec_nanos()) };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let ready = poll(&mut fds, Some(&timeout)).expect("poll");
        assert!(ready > 0, "daemon still running after {limit:?}:\n{}", self.stderr());
        self.child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

fn reply(client: &Client, request: Request<Full<Bytes>>) -> Reply {
    let raw = block_on(client.request(request)).unwrap_or_else(|e| panic!("request failed: {e}"));
    Reply { status: raw.status, headers: raw.headers, body: raw.body }
}

/// `GET path` over the Unix socket.
pub fn get_unix(socket: &Path, path: &str) -> Reply {
    let request = Request::get(path).body(Full::new(Bytes::new())).expect("request");
    request_unix(socket, request)
}

/// `request` as it is over the Unix socket (a `Host` header added if missing).
pub fn request_unix(socket: &Path, request: Request<Full<Bytes>>) -> Reply {
    reply(&Client::unix(socket), request)
}

/// `request` as it is over TCP: no token is added.
pub fn request_tcp(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    reply(&Client::tcp(addr, ""), request)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The real models fetched by `scripts/fetch-models`: `$ENGRAM_TEST_MODELS_DIR`,
/// else Engram's default models directory.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("ENGRAM_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .expect("HOME")
            .join("engram/models")
    });
    assert!(
        dir.join("SmolLM2-135M-Instruct").is_dir() && dir.join("all-MiniLM-L6-v2").is_dir(),
        "{} lacks the default models: run scripts/fetch-models (or set ENGRAM_TEST_MODELS_DIR)",
        dir.display()
    );
    dir
}

/// `METHOD path` with a JSON body over the Unix socket.
pub fn post_json(socket: &Path, path: &str, body: &serde_json::Value) -> Reply {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    request_unix(socket, request)
}

/// Copies folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The plugins under `plugins/` (hostile fixtures included), built and
/// installed once per test binary by `scripts/build-plugins`.
pub fn plugins_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("engram-e2e-plugins-{}", std::process::id()));
        let status = Command::new(root.join("scripts/build-plugins"))
            .arg("--with-fixtures")
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/build-plugins");
        assert!(status.success(), "scripts/build-plugins failed");
        dir
    })
}
