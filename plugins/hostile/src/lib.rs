//! Tools that misbehave on purpose: each must be stopped by the host with a
//! clear error while the daemon keeps serving.

use engram_plugin_sdk::{Context, Error, Plugin, Tool, Value, json};

struct Hostile;

const TOOLS: &[(&str, &str)] = &[
    ("spin", "Loops forever."),
    ("allocate", "Allocates memory until something stops it."),
    ("recurse", "Recurses without end."),
    ("read_file", "Reads the file at `path` (a relative escape or an absolute path)."),
    ("env", "Returns the environment it can see."),
    ("connect", "Opens a TCP connection to `address`."),
    ("flood", "Returns a result of `bytes` bytes."),
    ("print", "Writes a lot to stdout and stderr, then returns."),
    ("echo", "Returns its arguments (a well-behaved control)."),
    ("write_file", "Writes `text` to the file at `path`."),
    ("fetch", "GETs `url` through the host's HTTP interface, `times` times (default 1)."),
    ("recall", "Recalls passages about `query` from the caller's memory."),
    ("hoard", "Creates WASI resources (timers) without ever dropping one."),
    ("shout", "Writes one log message of `bytes` bytes."),
    ("sleep", "Sleeps `seconds` (default 600) with `std::thread::sleep`."),
    ("block", "Blocks on a WASI timer of `seconds` (default 600)."),
    ("poll", "Polls a WASI timer of `seconds` (default 600) among others that never fire."),
    ("random", "Asks the host for `bytes` random bytes at once (default 64 MiB)."),
    ("symlink", "Creates a symlink `link` to `target` in its granted `/data` directory."),
    ("numbers", "Returns a JSON array of `count` zeros (default 300,000: 600 KB of text, many values)."),
];

impl Plugin for Hostile {
    fn tools() -> Vec<Tool> {
        let mut tools: Vec<Tool> = TOOLS.iter().map(|(name, description)| Tool::new(name, description)).collect();
        tools.push(Tool::new("liar", "Promises a number in `answer` and returns `answer` as `kind` says.").output(
            json!({
                "type": "object",
                "properties": {"answer": {"type": "number"}},
                "required": ["answer"]
            }),
        ));
        tools
    }

    fn call(_: &Context, tool: &str, args: Value) -> Result<Value, Error> {
        match tool {
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(json!(recurse(std::hint::black_box(1)))),
            "read_file" => {
                let path = args["path"].as_str().unwrap_or("../../etc/passwd");
                std::fs::read_to_string(path).map(|text| json!(text)).map_err(|e| Error::failed(e.to_string()))
            }
            "env" => Ok(json!(std::env::vars().collect::<Vec<_>>())),
            "connect" => {
                let address = args["address"].as_str().unwrap_or("127.0.0.1:22");
                std::net::TcpStream::connect(address)
                    .map(|_| json!("connected"))
                    .map_err(|e| Error::failed(e.to_string()))
            }
            "flood" => Ok(json!("x".repeat(args["bytes"].as_u64().unwrap_or(8 << 20) as usize))),
            "print" => {
                for i in 0..10_000 {
                    println!("line {i} of a flood on stdout");
                    eprintln!("line {i} of a flood on stderr");
                }
                Ok(json!("printed"))
            }
            "echo" => Ok(args),
            "liar" => Ok(match args["kind"].as_str() {
                Some("honest") => json!({"answer": 42}),
                Some("missing") => json!({}),
                _ => json!({"answer": "forty-two"}),
            }),
            "write_file" => {
                let path = args["path"].as_str().unwrap_or("/data/out.txt");
                let text = args["text"].as_str().unwrap_or_default();
                std::fs::write(path, text).map(|()| json!("written")).map_err(|e| Error::failed(e.to_string()))
            }
            "fetch" => {
                let url = args["url"].as_str().unwrap_or("http://169.254.169.254/latest/meta-data/");
                let mut last = Value::Null;
                for _ in 0..args["times"].as_u64().unwrap_or(1) {
                    let (status, body) = engram_plugin_sdk::fetch("GET", url, &[], &[]).map_err(Error::failed)?;
                    last = json!({"status": status, "body": String::from_utf8_lossy(&body)});
                }
                Ok(last)
            }
            "hoard" => {
                let mut timers = Vec::new();
                for _ in 0..10_000_000 {
                    timers.push(wasi::clocks::monotonic_clock::subscribe_duration(1 << 40));
                }
                Ok(json!(timers.len()))
            }
            "shout" => {
                let bytes = args["bytes"].as_u64().unwrap_or(9 << 20) as usize;
                engram_plugin_sdk::log(engram_plugin_sdk::Level::Info, &"x".repeat(bytes));
                Ok(json!("shouted"))
            }
            "recall" => {
                let query = args["query"].as_str().unwrap_or_default();
                let hits = engram_plugin_sdk::recall(query, 3).map_err(Error::failed)?;
                Ok(json!(
                    hits.into_iter().map(|(text, score)| json!({"text": text, "score": score})).collect::<Vec<_>>()
                ))
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(seconds(&args)));
                Ok(json!("slept"))
            }
            "block" => {
                wasi::clocks::monotonic_clock::subscribe_duration(seconds(&args).saturating_mul(1_000_000_000)).block();
                Ok(json!("blocked"))
            }
            "poll" => {
                let never = wasi::clocks::monotonic_clock::subscribe_duration(u64::MAX);
                let timer =
                    wasi::clocks::monotonic_clock::subscribe_duration(seconds(&args).saturating_mul(1_000_000_000));
                Ok(json!(wasi::io::poll::poll(&[&never, &timer])))
            }
            "random" => {
                let bytes = args["bytes"].as_u64().unwrap_or(64 << 20);
                Ok(json!(wasi::random::random::get_random_bytes(bytes).len()))
            }
            "symlink" => {
                let target = args["target"].as_str().unwrap_or("../../../../etc/shadow");
                let link = args["link"].as_str().unwrap_or("shadow");
                let (data, _) = wasi::filesystem::preopens::get_directories()
                    .into_iter()
                    .find(|(_, path)| path == "/data")
                    .ok_or_else(|| Error::failed("no /data directory"))?;
                data.symlink_at(target, link).map_err(|code| Error::failed(format!("symlink: {code:?}")))?;
                Ok(json!("linked"))
            }
            "numbers" => {
                let count = args["count"].as_u64().unwrap_or(300_000) as usize;
                Ok(Value::Array(vec![json!(0); count]))
            }
            other => Err(Error::invalid(format!("no tool {other}"))),
        }
    }
}

/// The `seconds` argument (default 600).
fn seconds(args: &Value) -> u64 {
    args["seconds"].as_u64().unwrap_or(600)
}

#[allow(unconditional_recursion)] // the point of the fixture
fn recurse(depth: u64) -> u64 {
    let padding = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + padding[3]
}

engram_plugin_sdk::export_plugin!(Hostile);
