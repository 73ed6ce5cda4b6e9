//! A `tokenizers` tokenizer built from a GGUF file's `tokenizer.ggml.*`
//! metadata, plus the byte string each token stands for.
//!
//! Two GGUF tokenizer models are supported: `gpt2` (byte-level BPE with
//! merges and a pre-tokenizer named by `tokenizer.ggml.pre`) and `llama`
//! (SentencePiece: pieces with scores, `▁` for spaces, byte fallback).
//! candle's own GGUF tokenizer knows only a few pre-tokenizers; SmolLM2's
//! `smollm` needs individual digits before the byte-level split, and getting
//! it wrong silently produces ids the model was not trained on. Both are
//! checked against llama.cpp's own tokenizer test vectors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::ModelError;

const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;
const TOKEN_BYTE: i64 = 6;

/// SentencePiece's stand-in for a space.
const SPACE: char = '\u{2581}';

/// The tokenizer of a GGUF model and what the generator needs to know about it.
pub struct GgufTokenizer {
    /// The `tokenizers` pipeline.
    pub tokenizer: Tokenizer,
    /// Beginning-of-sequence token, if the model has one.
    pub bos: Option<u32>,
    /// Tokens that end a turn: EOS plus chat end markers.
    pub stop_tokens: Vec<u32>,
    /// Whether the model expects BOS before the prompt.
    pub add_bos: bool,
    /// Bytes each token decodes to; empty for control tokens.
    pub token_bytes: Vec<Vec<u8>>,
    /// Whether each token is a control token (never emitted as text).
    pub is_control: Vec<bool>,
    /// Token strings, for rendering chat templates.
    pub tokens: Vec<String>,
}

fn meta<'a>(ct: &'a Content, path: &Path, key: &str) -> Result<&'a Value, ModelError> {
    ct.metadata.get(key).ok_or_else(|| ModelError::bad_file(path, format!("GGUF metadata lacks `{key}`")))
}

fn strings(value: &Value, path: &Path, key: &str) -> Result<Vec<String>, ModelError> {
    let bad = || ModelError::bad_file(path, format!("GGUF metadata `{key}` is not an array of strings"));
    value.to_vec().map_err(|_| bad())?.iter().map(|v| v.to_string().cloned().map_err(|_| bad())).collect()
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::I8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

fn token_id(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(integer).and_then(|v| u32::try_from(v).ok())
}

impl GgufTokenizer {
    /// Builds the tokenizer from the metadata of the GGUF file at `path`.
    pub fn from_gguf(ct: &Content, path: &Path) -> Result<Self, ModelError> {
        let kind = meta(ct, path, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|_| ModelError::bad_file(path, "`tokenizer.ggml.model` is not a string"))?
            .to_lowercase();
        let tokens = strings(meta(ct, path, "tokenizer.ggml.tokens")?, path, "tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .map_err(|_| ModelError::bad_file(path, "`tokenizer.ggml.token_type` is not an array"))?
                .iter()
                .map(|v| integer(v).unwrap_or(TOKEN_NORMAL))
                .collect(),
            None => vec![TOKEN_NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(ModelError::bad_file(path, format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let (mut tokenizer, token_bytes) = match kind.as_str() {
            "gpt2" => {
                let merges: Vec<(String, String)> =
                    strings(meta(ct, path, "tokenizer.ggml.merges")?, path, "tokenizer.ggml.merges")?
                        .into_iter()
                        .map(|m| {
                            m.split_once(' ')
                                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                                .ok_or_else(|| ModelError::bad_file(path, format!("invalid BPE merge `{m}`")))
                        })
                        .collect::<Result<_, _>>()?;
                let pre =
                    ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
                // Llama 3 takes a whole pre-token that is in the vocabulary as
                // is, before any merge (llama.cpp and Hugging Face agree).
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(matches!(pre.as_str(), "llama3" | "llama-bpe"))
                    .build()
                    .map_err(|err| ModelError::bad_file(path, format!("cannot build the BPE model: {err}")))?;
                let mut tokenizer = Tokenizer::new(bpe);
                tokenizer.with_pre_tokenizer(Some(pre_tokenizer(&pre, path)?));
                tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
                let table = byte_decoder();
                let bytes = tokens.iter().map(|tok| token_to_bytes(tok, &table)).collect::<Vec<_>>();
                (tokenizer, bytes)
            }
            "llama" => sentencepiece(ct, path, &tokens, &types, vocab)?,
            other => {
                return Err(ModelError::bad_file(
                    path,
                    format!(
                        "tokenizer model `{other}` is not supported (byte-level BPE, `gpt2`, and SentencePiece, `llama`, are)"
                    ),
                ));
            }
        };

        // Control tokens are special (skipped when decoding for display);
        // user-defined ones are plain added tokens. Neither is split by BPE.
        let of_type = |kind: i64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, t)| **t == kind)
                .map(|(tok, _)| AddedToken::from(tok.clone(), special).normalized(false))
                .collect()
        };
        tokenizer
            .add_special_tokens(of_type(TOKEN_CONTROL, true))
            .map_err(|err| ModelError::bad_file(path, format!("cannot add control tokens: {err}")))?;
        tokenizer
            .add_tokens(of_type(TOKEN_USER_DEFINED, false))
            .map_err(|err| ModelError::bad_file(path, format!("cannot add user-defined tokens: {err}")))?;

        let is_control: Vec<bool> = types.iter().map(|t| *t == TOKEN_CONTROL).collect();
        let token_bytes = token_bytes
            .into_iter()
            .zip(&is_control)
            .map(|(bytes, control)| if *control { Vec::new() } else { bytes })
            .collect();

        let eos = token_id(ct, "tokenizer.ggml.eos_token_id")
            .ok_or_else(|| ModelError::bad_file(path, "GGUF metadata lacks `tokenizer.ggml.eos_token_id`"))?;
        let mut stop_tokens = vec![eos];
        if let Some(eot) = token_id(ct, "tokenizer.ggml.eot_token_id") {
            stop_tokens.push(eot);
        }
        for marker in ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"] {
            if let Some(id) = tokens.iter().position(|t| t == marker) {
                stop_tokens.push(id as u32);
            }
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        Ok(Self {
            tokenizer,
            bos: token_id(ct, "tokenizer.ggml.bos_token_id"),
            stop_tokens,
            add_bos,
            token_bytes,
            is_control,
            tokens,
        })
    }

    /// Token ids of `text`, control tokens in it recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|err| ModelError::Inference(format!("tokenization failed: {err}")))
    }

    /// The text of `ids`, control tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer.decode(ids, false).map_err(|err| ModelError::Inference(format!("detokenization failed: {err}")))
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The string of token `id`, if it exists.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

/// A SentencePiece (`llama`) tokenizer as `tokenizers` expresses it: BPE
/// whose merges rank by the score of the piece they make (the piece with
/// the higher score merges first, as in llama.cpp), spaces written as `▁`
/// (plus one in front when `add_space_prefix`), bytes without a piece
/// falling back to `<0xXX>` tokens. Also returns each token's bytes.
fn sentencepiece(
    ct: &Content,
    path: &Path,
    tokens: &[String],
    types: &[i64],
    vocab: tokenizers::models::bpe::Vocab,
) -> Result<(Tokenizer, Vec<Vec<u8>>), ModelError> {
    let scores: Vec<f32> = match ct.metadata.get("tokenizer.ggml.scores") {
        Some(value) => value
            .to_vec()
            .map_err(|_| ModelError::bad_file(path, "`tokenizer.ggml.scores` is not an array"))?
            .iter()
            .map(|v| v.to_f32().unwrap_or(0.0))
            .collect(),
        None => return Err(ModelError::bad_file(path, "GGUF metadata lacks `tokenizer.ggml.scores`")),
    };
    if scores.len() != tokens.len() {
        return Err(ModelError::bad_file(path, format!("{} scores for {} tokens", scores.len(), tokens.len())));
    }
    // Every split of a normal piece into two normal pieces is a merge.
    let normal = |id: u32| types.get(id as usize) == Some(&TOKEN_NORMAL);
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != TOKEN_NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right))
                && normal(l)
                && normal(r)
            {
                merges.push((scores[id], id as u32, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3))));
    let merges =
        merges.into_iter().map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect();
    let unknown = token_id(ct, "tokenizer.ggml.unknown_token_id").and_then(|id| tokens.get(id as usize)).cloned();
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
    if let Some(unknown) = unknown {
        bpe = bpe.unk_token(unknown);
    }
    let bpe = bpe
        .build()
        .map_err(|err| ModelError::bad_file(path, format!("cannot build the SentencePiece model: {err}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let space_prefix =
        ct.metadata.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
    let space = SPACE.to_string();
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|err| ModelError::bad_file(path, format!("tokenizer normalizer: {err}")))
    };
    let mut normalizers = vec![NormalizerWrapper::Replace(replace(" ", &space)?)];
    if space_prefix {
        normalizers.insert(0, NormalizerWrapper::Prepend(Prepend::new(space.clone())));
    }
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|err| ModelError::bad_file(path, format!("tokenizer normalizer: {err}")))?;
    let mut decoders = vec![
        DecoderWrapper::Replace(replace(&space, " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));

    let bytes = tokens
        .iter()
        .zip(types)
        .map(|(piece, kind)| match byte_piece(piece) {
            Some(byte) if *kind == TOKEN_BYTE => vec![byte],
            _ => piece.replace(SPACE, " ").into_bytes(),
        })
        .collect();
    Ok((tokenizer, bytes))
}

/// The byte of a `<0xXX>` piece.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() == 2 { u8::from_str_radix(hex, 16).ok() } else { None }
}

fn pre_tokenizer(pre: &str, path: &Path) -> Result<PreTokenizerWrapper, ModelError> {
    let byte_level = |regex: bool| ByteLevel::new(false, true, regex);
    let split = |pattern: &str| {
        Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|err| ModelError::bad_file(path, format!("pre-tokenizer regex: {err}")))
    };
    Ok(match pre {
        // SmolLM2: digits one by one, then GPT-2's byte-level split.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into(),
        "llama3" | "llama-bpe" | "smaug-bpe" | "lfm2" => {
            Sequence::new(vec![split(REGEX_LLAMA3)?.into(), byte_level(false).into()]).into()
        }
        "qwen2" => Sequence::new(vec![split(REGEX_QWEN2)?.into(), byte_level(false).into()]).into(),
        "gpt2" | "gpt-2" | "default" | "" => byte_level(true).into(),
        other => {
            tracing::warn!(pre = other, file = %path.display(), "unknown GGUF pre-tokenizer; using GPT-2's byte-level split");
            byte_level(true).into()
        }
    })
}

/// GPT-2's byte-to-unicode table, inverted: the character each byte is
/// written as in a byte-level vocabulary, back to the byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for byte in 0..=255u32 {
        let ch = if printable.contains(&byte) {
            byte
        } else {
            shifted += 1;
            255 + shifted
        };
        if let Some(ch) = char::from_u32(ch) {
            map.insert(ch, byte as u8);
        }
    }
    map
}

fn token_to_bytes(token: &str, table: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for ch in token.chars() {
        match table.get(&ch) {
            Some(byte) => out.push(*byte),
            // Not byte-level encoded (an added token): its own UTF-8.
            None => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_round_trips_every_byte() {
        let table = byte_decoder();
        assert_eq!(table.len(), 256);
        assert_eq!(token_to_bytes("Ġhello", &table), b" hello");
        assert_eq!(token_to_bytes("Ċ", &table), b"\n");
    }
}
