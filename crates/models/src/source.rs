//! Model sources: a local path, or a Hugging Face hub id fetched with
//! `hf-hub` when the hub is reachable.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// Files an embedding model folder needs from the hub.
const EMBEDDER_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
/// Files fetched when the hub has them.
const EMBEDDER_OPTIONAL: &[&str] = &["sentence_bert_config.json", "modules.json", "1_Pooling/config.json"];

/// Makes sure a hub model is on disk under `hub_dir` and returns its local
/// path: the GGUF file, or for a folder model (`file` is `None`) the folder.
pub fn fetch_from_hub(repo: &str, file: Option<&str>, hub_dir: &Path) -> Result<PathBuf, ModelError> {
    let source_id = match file {
        Some(file) => format!("hf:{repo}/{file}"),
        None => format!("hf:{repo}"),
    };
    let fail = |reason: String| ModelError::Source { source_id: source_id.clone(), reason };
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(hub_dir.to_path_buf())
        .with_progress(false)
        .build()
        .map_err(|err| fail(format!("cannot set up the hub client: {err}")))?;
    let model = api.model(repo.to_owned());
    let unreachable = |name: &str, err: hf_hub::api::sync::ApiError| {
        fail(format!(
            "cannot fetch `{name}` from the Hugging Face hub ({err}); download the model yourself and set the source to its local path"
        ))
    };
    match file {
        Some(name) => model.get(name).map_err(|err| unreachable(name, err)),
        None => {
            let mut folder = None;
            for name in EMBEDDER_FILES {
                let path = model.get(name).map_err(|err| unreachable(name, err))?;
                folder = path.parent().map(Path::to_path_buf);
            }
            for name in EMBEDDER_OPTIONAL {
                let _ = model.get(name);
            }
            folder.ok_or_else(|| fail("the hub returned no files".into()))
        }
    }
}
