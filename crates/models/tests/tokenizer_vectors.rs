//! Engram's GGUF tokenizers against llama.cpp's own test vectors: for each
//! vocabulary-only GGUF, the ids llama.cpp's tokenizer produces for ~45
//! tricky inputs (spaces, newlines, digits, emoji, Cyrillic, Chinese,
//! apostrophes). `scripts/fetch-test-vocabs` fetches them.

use std::path::PathBuf;

use engram_models::{GgufTokenizer, open_gguf};

fn vocab_dir() -> PathBuf {
    let dir = std::env::var_os("ENGRAM_TEST_VOCABS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .expect("HOME or XDG_CACHE_HOME");
        cache.join("engram").join("test-vocabs")
    });
    assert!(dir.is_dir(), "{} is missing: run scripts/fetch-test-vocabs (or set ENGRAM_TEST_VOCABS)", dir.display());
    dir
}

/// Every input of `ggml-vocab-NAME.gguf.inp` with llama.cpp's ids for it.
fn check(name: &str) {
    let dir = vocab_dir();
    let file = dir.join(format!("ggml-vocab-{name}.gguf"));
    let (content, _) = open_gguf(&file).unwrap();
    let tokenizer = GgufTokenizer::from_gguf(&content, &file).unwrap();
    let inputs = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let outputs = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = outputs.split('\n').collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (input, output) in inputs.iter().zip(&outputs) {
        if input.is_empty() && output.trim().is_empty() {
            continue;
        }
        let expected: Vec<u32> = output.split_whitespace().map(|id| id.parse().unwrap()).collect();
        let ours = tokenizer.encode(input).unwrap();
        if ours != expected {
            failures.push(format!("{input:?}\n   ours:      {ours:?}\n   llama.cpp: {expected:?}"));
        }
        // Decoding gives the text back (byte-level and byte-fallback vocabularies are lossless).
        let decoded = String::from_utf8_lossy(
            &ours.iter().flat_map(|&id| tokenizer.token_bytes[id as usize].clone()).collect::<Vec<u8>>(),
        )
        .into_owned();
        let prefix = decoded.strip_prefix(' ').filter(|_| name.ends_with("spm") || name == "phi-3");
        assert!(decoded == *input || prefix == Some(*input), "{name}: {input:?} decodes to {decoded:?}");
        checked += 1;
    }
    assert!(checked >= 30, "{name}: only {checked} vectors");
    assert!(failures.is_empty(), "{name}: {} of {checked} differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn sentencepiece_llama() {
    check("llama-spm");
}

#[test]
fn sentencepiece_phi3() {
    check("phi-3");
}

#[test]
fn byte_level_bpe_llama3() {
    check("llama-bpe");
}

#[test]
fn byte_level_bpe_qwen2() {
    check("qwen2");
}

#[test]
fn byte_level_bpe_gpt2() {
    check("gpt-2");
}
