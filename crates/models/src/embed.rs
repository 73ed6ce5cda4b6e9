//! Sentence embeddings with BERT-family models (sentence-transformers
//! layout): mean (or CLS) pooling and L2 normalization, batched on a
//! dedicated pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use crate::bert::Bert;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::ModelError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the non-padding tokens.
    Mean,
    /// The first (`[CLS]`) token.
    Cls,
}

/// A loaded embedding model.
pub struct Embedder {
    model: Bert,
    tokenizer: Tokenizer,
    // The same tokenizer without truncation or padding, for counting.
    counter: Tokenizer,
    device: Device,
    pool: rayon::ThreadPool,
    // One batch at a time: the pool is sized for the machine already.
    busy: Mutex<()>,
    dim: usize,
    max_tokens: usize,
    batch_size: usize,
    pooling: Pooling,
    normalize: bool,
    /// The model folder.
    pub path: PathBuf,
    /// The folder's name.
    pub name: String,
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text =
        std::fs::read_to_string(path).map_err(|err| ModelError::bad_file(path, format!("cannot read: {err}")))?;
    serde_json::from_str(&text).map_err(|err| ModelError::bad_file(path, format!("not valid JSON: {err}")))
}

impl Embedder {
    /// Loads the model folder `dir` onto `device`, running on `pool`.
    pub fn load(dir: &Path, device: &Device, pool: rayon::ThreadPool, batch_size: usize) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::bad_file(
                dir,
                "the embedding model folder does not exist (run scripts/fetch-models)",
            ));
        }
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_value(read_json(&config_path)?)
            .map_err(|err| ModelError::bad_file(&config_path, format!("not a BERT config: {err}")))?;
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(ModelError::bad_file(&tokenizer_path, "missing: the model folder needs its tokenizer.json"));
        }
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|err| ModelError::bad_file(&tokenizer_path, format!("not a tokenizer: {err}")))?;

        let st_max = dir
            .join("sentence_bert_config.json")
            .is_file()
            .then(|| read_json(&dir.join("sentence_bert_config.json")))
            .transpose()?
            .and_then(|v| v.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map(|v| v as usize);
        let max_tokens = st_max.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|err| ModelError::bad_file(&tokenizer_path, format!("cannot set truncation: {err}")))?;
        let pad_token = tokenizer.id_to_token(config.pad_token_id as u32).unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            pad_token,
            ..PaddingParams::default()
        }));

        let pooling_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pooling_path.is_file() {
            let value = read_json(&pooling_path)?;
            if value.get("pooling_mode_cls_token").and_then(serde_json::Value::as_bool) == Some(true) {
                Pooling::Cls
            } else if value.get("pooling_mode_mean_tokens").and_then(serde_json::Value::as_bool) == Some(false) {
                return Err(ModelError::bad_file(&pooling_path, "only mean and CLS pooling are supported"));
            } else {
                Pooling::Mean
            }
        } else {
            Pooling::Mean
        };
        let modules = dir.join("modules.json");
        let normalize = if modules.is_file() {
            read_json(&modules)?.as_array().is_some_and(|list| {
                list.iter().any(|m| {
                    m.get("type").and_then(serde_json::Value::as_str).is_some_and(|t| t.ends_with("Normalize"))
                })
            })
        } else {
            true
        };

        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(ModelError::bad_file(&weights, "missing: the model folder needs model.safetensors"));
        }
        // SAFETY: the file is mapped read-only; Engram never writes model files
        // while they are loaded (fetch-models replaces folders by rename).
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|err| ModelError::bad_file(&weights, format!("not a readable safetensors file: {err}")))?;
        let model = Bert::load(vb, &config)
            .map_err(|err| ModelError::bad_file(&weights, format!("weights do not match config.json: {err}")))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|err| ModelError::bad_file(&tokenizer_path, format!("cannot unset truncation: {err}")))?;
        counter.with_padding(None);
        Ok(Self {
            model,
            tokenizer,
            counter,
            device: device.clone(),
            pool,
            busy: Mutex::new(()),
            dim: config.hidden_size,
            max_tokens,
            batch_size: batch_size.max(1),
            pooling,
            normalize,
            path: dir.to_path_buf(),
            name,
        })
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest input in tokens; longer texts are truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens in `text` as the model counts them (special tokens included,
    /// before truncation).
    pub fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        self.counter
            .encode(text, true)
            .map(|enc| enc.get_ids().len())
            .map_err(|err| ModelError::Inference(format!("tokenization failed: {err}")))
    }

    /// One vector per text, in order. Blocks: call it from a blocking context.
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, ModelError> {
        let _guard = self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Similar lengths in a batch waste less on padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].as_ref().len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_ref()).collect();
            let vectors = self.pool.install(|| self.embed_batch(&inputs))?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|err| ModelError::Inference(format!("tokenization failed: {err}")))?;
        if self.device.is_cpu() { self.embed_packed(&encodings) } else { self.embed_padded(&encodings) }
    }

    /// The portable path: a padded batch and an attention mask, all candle ops.
    fn embed_padded(&self, encodings: &[tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, ModelError> {
            let rows =
                encodings.iter().map(|e| Tensor::new(f(e).as_slice(), &self.device)).collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let hidden = self.model.forward(&ids, &mask)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let pooled = if self.normalize {
            let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// The CPU path: no padding, pooling on the host.
    fn embed_packed(&self, encodings: &[tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, ModelError> {
        let sequences: Vec<Vec<u32>> = encodings
            .iter()
            .map(|e| {
                e.get_ids().iter().zip(e.get_attention_mask()).filter(|(_, m)| **m == 1).map(|(id, _)| *id).collect()
            })
            .collect();
        let (hidden, spans) = self.model.forward_packed(&sequences)?;
        let hidden = hidden.flatten_all()?.to_vec1::<f32>()?;
        let rows = |start: usize, len: usize| hidden[start * self.dim..(start + len) * self.dim].chunks_exact(self.dim);
        Ok(spans
            .into_iter()
            .map(|(start, len)| {
                let mut vector = match self.pooling {
                    Pooling::Cls => rows(start, len.min(1)).flatten().copied().collect(),
                    Pooling::Mean => {
                        let mut sum = vec![0.0f32; self.dim];
                        for row in rows(start, len) {
                            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                        }
                        let count = len.max(1) as f32;
                        sum.iter_mut().for_each(|s| *s /= count);
                        sum
                    }
                };
                vector.resize(self.dim, 0.0);
                if self.normalize {
                    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    vector.iter_mut().for_each(|v| *v /= norm);
                }
                vector
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[allow(dead_code)]
    mod common {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/mod.rs"));
    }

    use super::*;

    #[test]
    fn the_packed_cpu_path_matches_the_padded_one() {
        let pool = crate::inference_pool(2, "test-packed").unwrap();
        let embedder = Embedder::load(&common::minilm(), &Device::Cpu, pool, 8).unwrap();
        let long = "word ".repeat(400);
        let texts = ["Hi.", "A man is playing a guitar on a quiet street at night.", long.as_str(), "", "Ünïcödé ✓"];
        let encodings = embedder.tokenizer.encode_batch(texts.to_vec(), true).unwrap();
        let (packed, padded) =
            embedder.pool.install(|| (embedder.embed_packed(&encodings), embedder.embed_padded(&encodings)));
        for (a, b) in packed.unwrap().iter().zip(padded.unwrap()) {
            let max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(max_diff < 1e-5, "packed and padded vectors differ by {max_diff}");
        }
    }
}
