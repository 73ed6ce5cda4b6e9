//! A native CPU engine for llama-architecture GGUF models whose matrices are
//! Q4_0, Q4_1 or Q8_0 (SmolLM2, Llama, Mistral and their quantizations).
//!
//! candle's quantized llama spends most of a decode step outside its matrix
//! kernels (a fresh tensor per op, the KV cache re-concatenated each step,
//! f16 scales converted per call) and has no fast Q4_1 kernel at all. Here
//! weights stay in their GGUF blocks and are multiplied directly (`quant`),
//! the KV cache grows in place, and the small per-token steps (norm, rotary
//! embedding, attention, SwiGLU) are plain loops. Other architectures and
//! tensor types, and every GPU, use candle (`gguf::Weights`).

use std::fs::File;
use std::io::BufReader;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Result, bail};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::kernels::{Kernel, dispatch, exp};
use crate::quant::{QMatrix, WeightType};

struct Layer {
    attention_norm: Vec<f32>,
    q: QMatrix,
    k: QMatrix,
    v: QMatrix,
    o: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
    /// Keys and values of the positions seen so far, per key/value head
    /// `[position × head_dim]`, in f16 (as llama.cpp keeps them): long
    /// contexts are bound by reading this cache.
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
}

/// The loaded model and its KV cache.
pub struct Model {
    embeddings: QMatrix,
    /// `None`: the output layer is the embedding matrix (tied weights).
    output: Option<QMatrix>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    dim: usize,
    eps: f32,
    /// Rotary inverse frequencies, one per rotated pair.
    inv_freq: Vec<f32>,
    /// Positions in the KV cache.
    cached: usize,
}

const MATRICES: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

fn meta_u32(content: &Content, key: &str) -> Option<usize> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok()).map(|v| v as usize)
}

/// Whether this engine can run the file: a dense llama whose matrices are
/// all in block formats it multiplies directly.
pub fn supports(content: &Content) -> bool {
    let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok());
    if arch.map(String::as_str) != Some("llama") || meta_u32(content, "llama.expert_count").unwrap_or(0) > 1 {
        return false;
    }
    let Some(blocks) = meta_u32(content, "llama.block_count") else { return false };
    let fast = |name: &str| {
        content.tensor_infos.get(name).is_some_and(|info| WeightType::from_ggml(info.ggml_dtype).is_some())
    };
    let output = if content.tensor_infos.contains_key("output.weight") { "output.weight" } else { "token_embd.weight" };
    fast("token_embd.weight")
        && fast(output)
        && (0..blocks).all(|i| MATRICES.iter().all(|m| fast(&format!("blk.{i}.{m}.weight"))))
}

impl Model {
    /// Loads the weights; call only when [`supports`] holds.
    pub fn load(content: &Content, reader: &mut BufReader<File>) -> Result<Self> {
        let need = |key: &str| match meta_u32(content, key) {
            Some(v) if v > 0 => Ok(v),
            _ => bail!("metadata `{key}` is missing or zero"),
        };
        let heads = need("llama.attention.head_count")?;
        let kv_heads = meta_u32(content, "llama.attention.head_count_kv").unwrap_or(heads);
        let blocks = need("llama.block_count")?;
        let dim = need("llama.embedding_length")?;
        if dim % heads != 0 || heads % kv_heads != 0 {
            bail!("{heads} heads and {kv_heads} key/value heads do not divide a width of {dim}");
        }
        let head_dim = dim / heads;
        if meta_u32(content, "llama.attention.key_length").is_some_and(|k| k != head_dim) {
            bail!("a head size other than width / heads is not supported");
        }
        let rope_dim = meta_u32(content, "llama.rope.dimension_count").unwrap_or(head_dim).min(head_dim);
        let eps = content
            .metadata
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5);
        let base = content.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0);
        let mut inv_freq: Vec<f32> =
            (0..rope_dim / 2).map(|i| 1.0 / base.powf(2.0 * i as f32 / rope_dim as f32)).collect();

        let mut matrix = |name: &str, cols: usize| -> Result<QMatrix> {
            let tensor = content.tensor(reader, name, &Device::Cpu)?;
            let Some(kind) = WeightType::from_ggml(tensor.dtype()) else {
                bail!("`{name}` is {:?}, which the native engine does not multiply", tensor.dtype())
            };
            let (rows, width) = tensor.shape().dims2()?;
            if width != cols {
                bail!("`{name}` has rows of {width} values, expected {cols}");
            }
            QMatrix::new(kind, rows, cols, tensor.data()?.into_owned())
                .map_err(|err| candle_core::Error::msg(format!("`{name}`: {err}")))
        };
        let embeddings = matrix("token_embd.weight", dim)?;
        let output =
            if content.tensor_infos.contains_key("output.weight") { Some(matrix("output.weight", dim)?) } else { None };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let name = |m: &str| format!("blk.{i}.{m}.weight");
            let kv_dim = kv_heads * head_dim;
            let q = matrix(&name("attn_q"), dim)?;
            let k = matrix(&name("attn_k"), dim)?;
            let v = matrix(&name("attn_v"), dim)?;
            let o = matrix(&name("attn_output"), dim)?;
            let gate = matrix(&name("ffn_gate"), dim)?;
            let up = matrix(&name("ffn_up"), dim)?;
            let down = matrix(&name("ffn_down"), gate.rows)?;
            if q.rows != dim || k.rows != kv_dim || v.rows != kv_dim || o.rows != dim || up.rows != gate.rows {
                bail!("block {i}: attention or feed-forward shapes do not match the metadata");
            }
            if down.rows != dim {
                bail!("block {i}: ffn_down has {} rows, expected {dim}", down.rows);
            }
            layers.push(Layer {
                attention_norm: Vec::new(),
                q,
                k,
                v,
                o,
                ffn_norm: Vec::new(),
                gate,
                up,
                down,
                keys: vec![Vec::new(); kv_heads],
                values: vec![Vec::new(); kv_heads],
            });
        }
        let mut vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let values =
                content.tensor(reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            if values.len() != len {
                bail!("`{name}` has {} values, expected {len}", values.len());
            }
            Ok(values)
        };
        for (i, layer) in layers.iter_mut().enumerate() {
            layer.attention_norm = vector(&format!("blk.{i}.attn_norm.weight"), dim)?;
            layer.ffn_norm = vector(&format!("blk.{i}.ffn_norm.weight"), dim)?;
        }
        let output_norm = vector("output_norm.weight", dim)?;
        // Llama 3.1-style long-context rotary scaling ships as a tensor;
        // linear scaling (position interpolation) as metadata.
        if content.tensor_infos.contains_key("rope_freqs.weight") {
            let factors = vector("rope_freqs.weight", inv_freq.len())?;
            inv_freq.iter_mut().zip(factors).for_each(|(f, factor)| *f /= factor);
        }
        let scaling = content.metadata.get("llama.rope.scaling.type").and_then(|v| v.to_string().ok());
        match scaling.map(String::as_str) {
            None | Some("none") => {}
            Some("linear") => {
                let factor =
                    content.metadata.get("llama.rope.scaling.factor").and_then(|v| v.to_f32().ok()).unwrap_or(1.0);
                if factor > 0.0 {
                    inv_freq.iter_mut().for_each(|f| *f /= factor);
                }
            }
            Some(other) => tracing::warn!(scaling = other, "rotary scaling not applied; long contexts may degrade"),
        }
        Ok(Self { embeddings, output, output_norm, layers, heads, kv_heads, head_dim, dim, eps, inv_freq, cached: 0 })
    }

    /// Forgets the cached positions.
    pub fn clear(&mut self) {
        self.cached = 0;
        for layer in &mut self.layers {
            layer.keys.iter_mut().chain(&mut layer.values).for_each(Vec::clear);
        }
    }

    /// Logits for the last of `tokens`, which sit at positions
    /// `pos..pos + tokens.len()`; the cache keeps positions before `pos`
    /// (a smaller `pos` than cached rewinds).
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("no tokens to run");
        }
        if pos > self.cached {
            bail!("position {pos} is past the {} cached positions", self.cached);
        }
        let kv_dim = self.kv_heads * self.head_dim;
        for layer in &mut self.layers {
            let keep = pos * self.head_dim;
            layer.keys.iter_mut().chain(&mut layer.values).for_each(|cache| cache.truncate(keep));
        }
        let (n, dim) = (tokens.len(), self.dim);
        let mut x = vec![0.0f32; n * dim];
        for (row, &token) in x.chunks_exact_mut(dim).zip(tokens) {
            if token as usize >= self.embeddings.rows {
                bail!("token id {token} is outside the vocabulary of {}", self.embeddings.rows);
            }
            self.embeddings.dequantize_row(token as usize, row);
        }
        let mut normed = vec![0.0f32; n * dim];
        for layer in &mut self.layers {
            rms_norm(&x, &layer.attention_norm, self.eps, &mut normed);
            let h = &normed;
            let mut q = vec![0.0f32; n * dim];
            let mut k = vec![0.0f32; n * kv_dim];
            let mut v = vec![0.0f32; n * kv_dim];
            layer.q.matmul(h, &mut q);
            layer.k.matmul(h, &mut k);
            layer.v.matmul(h, &mut v);
            rotate(&mut q, dim, self.head_dim, &self.inv_freq, pos);
            rotate(&mut k, kv_dim, self.head_dim, &self.inv_freq, pos);
            let d = self.head_dim;
            for (from, to) in [(&k, &mut layer.keys), (&v, &mut layer.values)] {
                for row in from.chunks_exact(kv_dim) {
                    for (head, cache) in row.chunks_exact(d).zip(to.iter_mut()) {
                        cache.extend(head.iter().map(|&x| f16::from_f32(x)));
                    }
                }
            }
            let mut context = vec![0.0f32; n * dim];
            let attention = Attention {
                keys: &layer.keys,
                values: &layer.values,
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: self.head_dim,
                pos,
            };
            attention.run(&q, &mut context);
            let mut out = vec![0.0f32; n * dim];
            layer.o.matmul(&context, &mut out);
            x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);

            rms_norm(&x, &layer.ffn_norm, self.eps, &mut normed);
            let h = &normed;
            let hidden = layer.gate.rows;
            let mut gate = vec![0.0f32; n * hidden];
            let mut up = vec![0.0f32; n * hidden];
            layer.gate.matmul(h, &mut gate);
            layer.up.matmul(h, &mut up);
            dispatch(SwiGlu { gate: &mut gate, up: &up });
            layer.down.matmul(&gate, &mut out);
            x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        }
        self.cached = pos + n;
        let last = &x[(n - 1) * dim..];
        let mut normed = vec![0.0f32; dim];
        rms_norm(last, &self.output_norm, self.eps, &mut normed);
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let mut logits = vec![0.0f32; output.rows];
        output.matmul(&normed, &mut logits);
        Ok(logits)
    }
}

/// `out = x / rms(x) * weight`, row by row.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (x, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean_square = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Rotary embedding, llama's (GGUF) layout: adjacent pairs rotate together.
/// `x` holds rows `width` wide of heads of `head_dim`; row `t` sits at
/// position `pos + t`.
fn rotate(x: &mut [f32], width: usize, head_dim: usize, inv_freq: &[f32], pos: usize) {
    let mut table = vec![(0.0f32, 0.0f32); inv_freq.len()];
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let p = (pos + t) as f32;
        for (entry, &f) in table.iter_mut().zip(inv_freq) {
            let (sin, cos) = (p * f).sin_cos();
            *entry = (cos, sin);
        }
        for head in row.chunks_exact_mut(head_dim) {
            for ([a, b], &(cos, sin)) in head.as_chunks_mut::<2>().0.iter_mut().zip(&table) {
                (*a, *b) = (*a * cos - *b * sin, *a * sin + *b * cos);
            }
        }
    }
}

/// `gate = silu(gate) * up`.
struct SwiGlu<'a> {
    gate: &'a mut [f32],
    up: &'a [f32],
}

impl Kernel for SwiGlu<'_> {
    #[inline(always)]
    fn run(self) {
        for (g, &u) in self.gate.iter_mut().zip(self.up) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }
}

/// Causal attention of new queries over the cached keys and values.
struct Attention<'a> {
    keys: &'a [Vec<f16>],
    values: &'a [Vec<f16>],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Position of the first query.
    pos: usize,
}

/// Cached positions widened to f32 at a time, and the span one decoding
/// task covers: a long context splits into several tasks (merged by their
/// softmax maxima and sums) so a single new token keeps every core busy.
const POSITIONS_PER_CHUNK: usize = 128;
/// Queries one prompt task covers: they share each widened chunk.
const QUERIES_PER_TASK: usize = 16;

impl Attention<'_> {
    /// `context[t]` for each query row `q[t]`, parallel over (key/value
    /// head, block of queries, span of positions): the query heads sharing
    /// a key/value head read the cache once per block.
    fn run(&self, q: &[f32], context: &mut [f32]) {
        let (d, group) = (self.head_dim, self.heads / self.kv_heads);
        let tokens = q.len() / (self.heads * d);
        let visible = self.pos + tokens;
        let mut tasks = Vec::new();
        for kv in 0..self.kv_heads {
            if tokens == 1 {
                for start in (0..visible).step_by(POSITIONS_PER_CHUNK) {
                    tasks.push((kv, 0..1, start..(start + POSITIONS_PER_CHUNK).min(visible)));
                }
            } else {
                for first in (0..tokens).step_by(QUERIES_PER_TASK) {
                    tasks.push((kv, first..(first + QUERIES_PER_TASK).min(tokens), 0..visible));
                }
            }
        }
        let partials: Vec<(usize, usize, Partial)> = tasks
            .into_par_iter()
            .flat_map_iter(|(kv, queries, span)| {
                let mut partials: Vec<Partial> = queries.clone().map(|_| Partial::new(group, d)).collect();
                dispatch(BlockAttention {
                    attention: self,
                    q,
                    kv,
                    queries: queries.clone(),
                    span,
                    partials: &mut partials,
                });
                queries.zip(partials).map(move |(t, partial)| (t, kv, partial))
            })
            .collect();
        // Merge the spans of each (token, key/value head) and normalize.
        let mut merged: Vec<Option<Partial>> = (0..tokens * self.kv_heads).map(|_| None).collect();
        for (t, kv, partial) in partials {
            match &mut merged[t * self.kv_heads + kv] {
                Some(total) => total.absorb(&partial),
                slot => *slot = Some(partial),
            }
        }
        for (i, total) in merged.into_iter().enumerate() {
            let (t, kv) = (i / self.kv_heads, i % self.kv_heads);
            let out = &mut context[(t * self.heads + kv * group) * d..][..group * d];
            match total {
                Some(total) => {
                    for ((out, head), sum) in out.chunks_exact_mut(d).zip(total.out.chunks_exact(d)).zip(&total.sum) {
                        let inv = 1.0 / sum;
                        out.iter_mut().zip(head).for_each(|(o, v)| *o = v * inv);
                    }
                }
                None => out.iter_mut().for_each(|o| *o = 0.0),
            }
        }
    }
}

/// Unnormalized attention of a group of query heads over some positions:
/// per head, the highest score, the sum of `exp(score - max)` and the value
/// rows weighted by it.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    out: Vec<f32>,
}

impl Partial {
    fn new(group: usize, d: usize) -> Self {
        Self { max: vec![f32::NEG_INFINITY; group], sum: vec![0.0; group], out: vec![0.0; group * d] }
    }

    /// Adds another span's result (online softmax).
    fn absorb(&mut self, other: &Partial) {
        let d = self.out.len() / self.max.len();
        for h in 0..self.max.len() {
            let max = self.max[h].max(other.max[h]);
            if max == f32::NEG_INFINITY {
                continue;
            }
            let (mine, theirs) = (exp(self.max[h] - max), exp(other.max[h] - max));
            self.sum[h] = self.sum[h] * mine + other.sum[h] * theirs;
            for (o, &v) in self.out[h * d..(h + 1) * d].iter_mut().zip(&other.out[h * d..(h + 1) * d]) {
                *o = *o * mine + v * theirs;
            }
            self.max[h] = max;
        }
    }
}

/// The query heads of one key/value head, for a block of queries, over
/// cached positions `span` (each query sees only positions up to its own).
struct BlockAttention<'a> {
    attention: &'a Attention<'a>,
    q: &'a [f32],
    kv: usize,
    queries: std::ops::Range<usize>,
    span: std::ops::Range<usize>,
    partials: &'a mut [Partial],
}

impl Kernel for BlockAttention<'_> {
    #[inline(always)]
    fn run(self) {
        let a = self.attention;
        let (d, group) = (a.head_dim, a.heads / a.kv_heads);
        let scale = 1.0 / (d as f32).sqrt();
        let last_visible = a.pos + self.queries.end;
        let end = self.span.end.min(last_visible);
        let mut keys = vec![0.0f32; POSITIONS_PER_CHUNK * d];
        let mut values = vec![0.0f32; POSITIONS_PER_CHUNK * d];
        let mut scores = vec![0.0f32; POSITIONS_PER_CHUNK];
        let mut start = self.span.start;
        while start < end {
            let stop = (start + POSITIONS_PER_CHUNK).min(end);
            let len = (stop - start) * d;
            // This head's chunk of the cache, widened to f32 once.
            a.keys[self.kv][start * d..stop * d].convert_to_f32_slice(&mut keys[..len]);
            a.values[self.kv][start * d..stop * d].convert_to_f32_slice(&mut values[..len]);
            for (t, partial) in self.queries.clone().zip(self.partials.iter_mut()) {
                let seen = (a.pos + t + 1).min(stop);
                if seen <= start {
                    continue;
                }
                let n = seen - start;
                for h in 0..group {
                    let q = &self.q[(t * a.heads + self.kv * group + h) * d..][..d];
                    let mut max = partial.max[h];
                    for (score, key) in scores[..n].iter_mut().zip(keys.chunks_exact(d)) {
                        *score = dot(q, key) * scale;
                        max = max.max(*score);
                    }
                    let rescale = exp(partial.max[h] - max);
                    let out = &mut partial.out[h * d..(h + 1) * d];
                    out.iter_mut().for_each(|o| *o *= rescale);
                    let mut sum = partial.sum[h] * rescale;
                    for (&score, value) in scores[..n].iter().zip(values.chunks_exact(d)) {
                        let weight = exp(score - max);
                        sum += weight;
                        for (o, &v) in out.iter_mut().zip(value) {
                            *o += weight * v;
                        }
                    }
                    partial.max[h] = max;
                    partial.sum[h] = sum;
                }
            }
            start = stop;
        }
    }
}

/// A dot product the compiler can vectorize (eight independent sums).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let ((ca, ra), (cb, rb)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
