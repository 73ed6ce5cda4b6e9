//! A BERT encoder for sentence embeddings, shaped for CPU speed.
//!
//! candle-transformers' BERT runs every linear layer as a batch of small
//! matrix products (one per sentence, M = sentence length); here the batch
//! is flattened so each layer is one large product, and query, key and
//! value share one fused projection. Weights and results are those of the
//! standard BERT layout (`embeddings.*`, `encoder.layer.N.*`).
//!
//! On the CPU, [`Bert::forward_packed`] goes further: sequences are laid end
//! to end without padding and the elementwise work runs in fused kernels
//! (`kernels`); other devices use the padded [`Bert::forward`].

use crate::kernels::{AddNorm, BiasAct, PackedAttention};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};
use candle_transformers::models::bert::{Config, HiddenAct};

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    output_norm: LayerNorm,
    /// Host copies of the small parameters for the fused CPU kernels.
    params: LayerParams,
}

struct LayerParams {
    qkv_bias: Vec<f32>,
    attention_out_bias: Vec<f32>,
    attention_norm: (Vec<f32>, Vec<f32>),
    up_bias: Vec<f32>,
    down_bias: Vec<f32>,
    output_norm: (Vec<f32>, Vec<f32>),
}

fn bias(linear: &Linear) -> Result<Vec<f32>> {
    match linear.bias() {
        Some(bias) => bias.to_dtype(DType::F32)?.to_vec1(),
        None => Ok(vec![0.0; linear.weight().dim(0)?]),
    }
}

fn norm_params(norm: &LayerNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let gamma = norm.weight().to_dtype(DType::F32)?.to_vec1()?;
    let beta = match norm.bias() {
        Some(beta) => beta.to_dtype(DType::F32)?.to_vec1()?,
        None => vec![0.0; gamma.len()],
    };
    Ok((gamma, beta))
}

impl Layer {
    fn new(
        qkv: Linear,
        attention_out: Linear,
        attention_norm: LayerNorm,
        up: Linear,
        down: Linear,
        output_norm: LayerNorm,
    ) -> Result<Self> {
        let params = LayerParams {
            qkv_bias: bias(&qkv)?,
            attention_out_bias: bias(&attention_out)?,
            attention_norm: norm_params(&attention_norm)?,
            up_bias: bias(&up)?,
            down_bias: bias(&down)?,
            output_norm: norm_params(&output_norm)?,
        };
        Ok(Self { qkv, attention_out, attention_norm, up, down, output_norm, params })
    }
}

/// `x · wᵀ` without the bias (the fused kernels add it).
fn project(x: &Tensor, linear: &Linear) -> Result<Tensor> {
    x.matmul(&linear.weight().t()?)
}

/// The encoder: token ids in, one hidden vector per token out.
pub(crate) struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    act: HiddenAct,
    eps: f32,
}

impl Bert {
    /// Loads the weights; a `bert.` prefix (as in some checkpoints) is accepted.
    pub(crate) fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
        let h = config.hidden_size;
        let emb = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let vb = vb.pp(format!("encoder.layer.{i}"));
            let attn = vb.pp("attention");
            let (q, k, v) = (
                linear(h, h, attn.pp("self.query"))?,
                linear(h, h, attn.pp("self.key"))?,
                linear(h, h, attn.pp("self.value"))?,
            );
            let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
                _ => None,
            };
            layers.push(Layer::new(
                Linear::new(weight, bias),
                linear(h, h, attn.pp("output.dense"))?,
                layer_norm(h, config.layer_norm_eps, attn.pp("output.LayerNorm"))?,
                linear(h, config.intermediate_size, vb.pp("intermediate.dense"))?,
                linear(config.intermediate_size, h, vb.pp("output.dense"))?,
                layer_norm(h, config.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            )?);
        }
        Ok(Self {
            words: embedding(config.vocab_size, h, emb.pp("word_embeddings"))?,
            positions: embedding(config.max_position_embeddings, h, emb.pp("position_embeddings"))?,
            token_types: embedding(config.type_vocab_size, h, emb.pp("token_type_embeddings"))?,
            embedding_norm: layer_norm(h, config.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            hidden: h,
            act: config.hidden_act,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// Hidden states `[batch, len, hidden]` for `ids` `[batch, len]` with
    /// attention `mask` `[batch, len]` (1 = token, 0 = padding).
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            .broadcast_add(&self.token_types.forward(&ids.zeros_like()?)?)?;
        let mut x = self.embedding_norm.forward(&x)?.reshape((batch * len, self.hidden))?;
        // 0 where attended, the most negative float at padding: [batch, 1, 1, len].
        let additive = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?.reshape((batch, 1, 1, len))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv =
                layer.qkv.forward(&x)?.reshape((batch, len, 3, self.heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?;
            let q = qkv.get(0)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&additive)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * len, self.hidden))?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.up.forward(&attended)?;
            let inner = match self.act {
                HiddenAct::Gelu => inner.gelu_erf()?,
                HiddenAct::GeluApproximate => inner.gelu()?,
                HiddenAct::Relu => inner.relu()?,
            };
            x = layer.output_norm.forward(&(layer.down.forward(&inner)? + &attended)?)?;
        }
        x.reshape((batch, len, self.hidden))
    }

    /// Hidden states `[tokens, hidden]` for sequences laid end to end (no
    /// padding): row `start + i` belongs to token `i` of the sequence whose
    /// span is `(start, len)`. CPU only.
    pub(crate) fn forward_packed(&self, sequences: &[Vec<u32>]) -> Result<(Tensor, Vec<(usize, usize)>)> {
        let device = self.words.embeddings().device();
        let mut spans = Vec::with_capacity(sequences.len());
        let (mut ids, mut positions) = (Vec::new(), Vec::new());
        for sequence in sequences {
            spans.push((ids.len(), sequence.len()));
            ids.extend_from_slice(sequence);
            positions.extend(0..sequence.len() as u32);
        }
        let tokens = ids.len();
        let ids = Tensor::from_vec(ids, tokens, device)?;
        let positions = Tensor::from_vec(positions, tokens, device)?;
        let x = (self.words.forward(&ids)? + self.positions.forward(&positions)?)?
            .broadcast_add(&self.token_types.forward(&Tensor::zeros(1, DType::U32, device)?)?)?;
        let mut x = self.embedding_norm.forward(&x)?;
        for layer in &self.layers {
            let p = &layer.params;
            let attention =
                PackedAttention { bias: &p.qkv_bias, spans: &spans, heads: self.heads, head_dim: self.head_dim };
            let context = project(&x, &layer.qkv)?.apply_op1_no_bwd(&attention)?;
            let (gamma, beta) = &p.attention_norm;
            let norm = AddNorm { bias: &p.attention_out_bias, gamma, beta, eps: self.eps };
            let attended = project(&context, &layer.attention_out)?;
            attended.inplace_op2(&x, &norm)?;
            let inner = project(&attended, &layer.up)?;
            inner.inplace_op1(&BiasAct { bias: &p.up_bias, act: self.act })?;
            let (gamma, beta) = &p.output_norm;
            let norm = AddNorm { bias: &p.down_bias, gamma, beta, eps: self.eps };
            x = project(&inner, &layer.down)?;
            x.inplace_op2(&attended, &norm)?;
        }
        Ok((x, spans))
    }
}
