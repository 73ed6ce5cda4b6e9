//! A `tokenizers` tokenizer built from a GGUF file's `tokenizer.ggml.*`
//! metadata, plus the byte string each token stands for.
//!
//! candle's own GGUF tokenizer knows only a few pre-tokenizers; SmolLM2's
//! `smollm` needs individual digits before the byte-level split, and getting
//! it wrong silently produces ids the model was not trained on.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
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
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

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
        if kind != "gpt2" {
            return Err(ModelError::bad_file(
                path,
                format!("tokenizer model `{kind}` is not supported yet (byte-level BPE, `gpt2`, is)"),
            ));
        }
        let tokens = strings(meta(ct, path, "tokenizer.ggml.tokens")?, path, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> =
            strings(meta(ct, path, "tokenizer.ggml.merges")?, path, "tokenizer.ggml.merges")?
                .into_iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| ModelError::bad_file(path, format!("invalid BPE merge `{m}`")))
                })
                .collect::<Result<_, _>>()?;
        let types: Vec<i64> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(value) => value
                .to_vec()
                .map_err(|_| ModelError::bad_file(path, "`tokenizer.ggml.token_type` is not an array"))?
                .iter()
                .map(|v| integer(v).unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(ModelError::bad_file(path, format!("{} token types for {} tokens", types.len(), tokens.len())));
        }

        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|err| ModelError::bad_file(path, format!("cannot build the BPE model: {err}")))?;
        let mut tokenizer = Tokenizer::new(bpe);

        let pre = ct.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer(&pre, path)?));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));

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

        let table = byte_decoder();
        let is_control: Vec<bool> = types.iter().map(|t| *t == TOKEN_CONTROL).collect();
        let token_bytes = tokens
            .iter()
            .zip(&is_control)
            .map(|(tok, control)| if *control { Vec::new() } else { token_to_bytes(tok, &table) })
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
        "gpt2" | "default" | "" => byte_level(true).into(),
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
