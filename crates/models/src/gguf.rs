//! GGUF files: opening with clear errors, converting tensor types candle has
//! no fast kernel for, and the architectures the generator runs.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_llama, quantized_qwen2, quantized_qwen3};

use crate::ModelError;

/// Opens a GGUF file and reads its header, metadata and tensor index.
pub fn open(path: &Path) -> Result<(Content, BufReader<File>), ModelError> {
    let file = File::open(path).map_err(|err| ModelError::bad_file(path, format!("cannot open: {err}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|err| ModelError::bad_file(path, format!("not a readable GGUF file: {err}")))?;
    // A truncated download reads fine up to the tensor data: check it all fits.
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = content.tensor_data_offset + info.offset + bytes as u64;
        if end > size {
            return Err(ModelError::bad_file(
                path,
                format!("tensor `{name}` ends at byte {end} but the file has {size}: the file is truncated"),
            ));
        }
    }
    Ok((content, reader))
}

/// Tensor types that candle 0.11 runs only on a slow scalar path on CPU.
const SLOW_ON_CPU: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// If `path` holds tensors of a type without a fast CPU kernel, converts
/// them once to Q8_0 (which has one) and returns the cached converted file;
/// otherwise returns `path`. The cache key covers the source's size and
/// modification time, so a replaced model is converted again.
pub fn fast_variant(path: &Path, cache_dir: &Path) -> Result<PathBuf, ModelError> {
    let (content, mut reader) = open(path)?;
    if !content.tensor_infos.values().any(|info| SLOW_ON_CPU.contains(&info.ggml_dtype)) {
        return Ok(path.to_path_buf());
    }
    let meta = std::fs::metadata(path).map_err(|err| ModelError::bad_file(path, err))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let target = cache_dir.join(format!("{stem}.{:x}-{:x}.q8_0.gguf", meta.len(), meta.mtime_nsec() ^ meta.mtime()));
    if target.is_file() && open(&target).is_ok() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache_dir).map_err(|err| ModelError::bad_file(cache_dir, err))?;
    let started = std::time::Instant::now();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(content.tensor_infos.len());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|name| content.tensor_infos[*name].offset);
    for name in names {
        let tensor = content.tensor(&mut reader, name, &Device::Cpu)?;
        let tensor = if SLOW_ON_CPU.contains(&tensor.dtype()) {
            let dense: Tensor = tensor.dequantize(&Device::Cpu)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0)?
        } else {
            tensor
        };
        tensors.push((name.clone(), tensor));
    }
    // A private name per writer: two processes converting at once must not
    // interleave; the rename makes whichever finishes last win, whole.
    static WRITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let partial = target.with_extension(format!(
        "{}-{}.partial",
        std::process::id(),
        WRITER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let file = File::create(&partial).map_err(|err| ModelError::bad_file(&partial, err))?;
    let mut writer = BufWriter::new(file);
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut writer, &metadata, &refs)?;
    let file = writer.into_inner().map_err(|err| ModelError::bad_file(&partial, err.error().to_string()))?;
    file.sync_all().map_err(|err| ModelError::bad_file(&partial, err))?;
    std::fs::rename(&partial, &target).map_err(|err| ModelError::bad_file(&target, err))?;
    tracing::info!(
        source = %path.display(),
        converted = %target.display(),
        ms = started.elapsed().as_millis() as u64,
        "converted slow-kernel tensors to Q8_0 (once; cached)"
    );
    let _ = reader.rewind();
    Ok(target)
}

/// The transformer weights of one supported architecture.
pub enum Weights {
    /// A llama with Q4_0/Q4_1/Q8_0 matrices on the native CPU engine.
    Native(crate::cpu_llama::Model),
    /// Llama, SmolLM, Mistral and other llama-layout models.
    Llama(quantized_llama::ModelWeights),
    /// Qwen2 / Qwen2.5.
    Qwen2(quantized_qwen2::ModelWeights),
    /// Qwen3.
    Qwen3(quantized_qwen3::ModelWeights),
    /// Gemma 3.
    Gemma3(quantized_gemma3::ModelWeights),
}

impl Weights {
    /// Loads the weights named by `general.architecture`: on the native CPU
    /// engine when `native` is set and it supports the file, else candle's.
    pub fn load(
        content: Content,
        reader: &mut BufReader<File>,
        path: &Path,
        device: &Device,
        native: bool,
    ) -> Result<Self, ModelError> {
        let arch =
            content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        let wrap = |err: candle_core::Error| ModelError::bad_file(path, format!("cannot load {arch} weights: {err}"));
        if native && device.is_cpu() && crate::cpu_llama::supports(&content) {
            return Ok(Self::Native(crate::cpu_llama::Model::load(&content, reader).map_err(wrap)?));
        }
        Ok(match arch.as_str() {
            "llama" => Self::Llama(quantized_llama::ModelWeights::from_gguf(content, reader, device).map_err(wrap)?),
            "qwen2" => Self::Qwen2(quantized_qwen2::ModelWeights::from_gguf(content, reader, device).map_err(wrap)?),
            "qwen3" => Self::Qwen3(quantized_qwen3::ModelWeights::from_gguf(content, reader, device).map_err(wrap)?),
            "gemma3" => Self::Gemma3(quantized_gemma3::ModelWeights::from_gguf(content, reader, device).map_err(wrap)?),
            other => {
                return Err(ModelError::bad_file(
                    path,
                    format!("architecture `{other}` is not supported (llama, qwen2, qwen3 and gemma3 are)"),
                ));
            }
        })
    }

    /// Logits for the last position of `tokens` (shape `[1, n]`), which sit
    /// at positions `pos..pos + n`.
    pub fn forward(&mut self, tokens: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Native(m) => {
                let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
                let logits = m.forward(&ids, pos)?;
                let vocab = logits.len();
                Tensor::from_vec(logits, (1, vocab), &Device::Cpu)
            }
            Self::Llama(m) => m.forward(tokens, pos),
            Self::Qwen2(m) => m.forward(tokens, pos),
            Self::Qwen3(m) => m.forward(tokens, pos),
            Self::Gemma3(m) => m.forward(tokens, pos),
        }
    }

    /// Forgets the previous sequence (a forward at position 0 also resets).
    pub fn clear(&mut self) {
        match self {
            Self::Native(m) => m.clear(),
            Self::Llama(m) => m.clear_kv_cache(),
            Self::Qwen2(m) => m.clear_kv_cache(),
            Self::Qwen3(m) => m.clear_kv_cache(),
            Self::Gemma3(_) => {}
        }
    }

    /// Which engine runs the weights, for reports.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Native(_) => "native",
            _ => "candle",
        }
    }
}

/// The model's context length from its metadata, if stated.
pub fn context_length(content: &Content) -> Option<usize> {
    let arch = content.metadata.get("general.architecture")?.to_string().ok()?;
    let value = content.metadata.get(&format!("{arch}.context_length"))?;
    value.to_u32().ok().map(|v| v as usize).or_else(|| value.to_u64().ok().map(|v| v as usize))
}
