mod common;
use engram_models::*;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let opts = LocalOptions {
        device: Device::Cpu,
        context_tokens: 2048,
        cache_dir: dir.path().to_path_buf(),
        convert_slow_types: std::env::var("CONVERT").is_ok(),
    };
    let mut m = LocalModel::load(&common::smollm2(), &opts).unwrap();
    eprintln!("load {:?} own template {}", t.elapsed(), m.has_own_template());
    let prompt = Prompt::Chat(vec![Message::new(Role::User, "What is the capital of France?")]);
    let text = m.render(&prompt).unwrap();
    eprintln!("PROMPT {text:?}");
    let ids = m.tokenizer().encode(&text).unwrap();
    eprintln!("IDS {ids:?}");
    let req =
        GenerateRequest { prompt, sampling: SamplingParams::greedy(), max_tokens: 40, stop: vec![], json_schema: None };
    let mut out = String::new();
    let f = m.generate(&req, &mut out).unwrap();
    eprintln!("OUT {out:?} {f:?} tok/s {}", f.completion_tokens as f64 / f.decode.as_secs_f64());
    let schema = serde_json::json!({"type":"object","properties":{"city":{"type":"string"},"population":{"type":"integer"}},"required":["city","population"]});
    let req = GenerateRequest {
        prompt: Prompt::Chat(vec![Message::new(
            Role::User,
            "Give the largest city of Japan as JSON with city and population.",
        )]),
        sampling: SamplingParams::default(),
        max_tokens: 60,
        stop: vec![],
        json_schema: Some(schema),
    };
    let mut out = String::new();
    let f = m.generate(&req, &mut out).unwrap();
    eprintln!("JSON {out:?} {f:?}");
    let pool = inference_pool(2, "embed").unwrap();
    let e = Embedder::load(&common::minilm(), &Device::Cpu, pool, 32).unwrap();
    let v = e.embed(&["hello world", "a cat sits on the mat"]).unwrap();
    eprintln!("EMB {} {:?}", v[0].len(), &v[0][..4]);
}
