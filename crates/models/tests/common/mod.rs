// Locating the real model weights fetched by `scripts/fetch-models`.
// (Plain comments: unit tests `include!` this file too.)

use std::path::PathBuf;

/// The models directory: `$ENGRAM_TEST_MODELS_DIR`, else Engram's default
/// (`$XDG_DATA_HOME/engram/models`, `~/.local/share/engram/models`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENGRAM_TEST_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .expect("HOME or XDG_DATA_HOME");
    data.join("engram").join("models")
}

fn require(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: run scripts/fetch-models (or set ENGRAM_TEST_MODELS_DIR)", path.display());
    path
}

/// The default LLM: SmolLM2-135M-Instruct, Q4_1.
pub fn smollm2() -> PathBuf {
    require(models_dir().join("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// The default embedder's folder: all-MiniLM-L6-v2.
pub fn minilm() -> PathBuf {
    require(models_dir().join("all-MiniLM-L6-v2"))
}
