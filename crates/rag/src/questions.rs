//! Calibration questions written by an LLM (`engram calibrate --generate`).
//!
//! Chunks are drawn uniformly at random, without replacement, from the
//! collection (those of fewer than [`MIN_WORDS`] words are passed over:
//! nothing can be asked of them); the LLM writes one question each passage
//! answers, and the passage's chunk is that question's gold chunk. The
//! certificate then covers questions like these, drawn the same way: say so
//! in the certificate (`questions_from`), and prefer real users' questions
//! (`--questions FILE`) when they exist.
//!
//! Small models sometimes answer instead of asking, copy a sentence, or
//! ramble; [`clean_question`] keeps only a single short question that is
//! not a verbatim copy, and the caller counts the rest as rejected.

use engram_models::{GenerateRequest, Message, Prompt, Role, SamplingParams};

use crate::certify::SplitMix;
use crate::engine::{Rag, RagError};

/// Chunks with fewer words are not sampled.
pub const MIN_WORDS: usize = 8;
/// Passages longer than this are cut (at a character boundary) in the prompt.
pub const MAX_PASSAGE_CHARS: usize = 2_000;
/// Tokens a question may take.
pub const MAX_QUESTION_TOKENS: usize = 64;

/// A chunk drawn for a question.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledChunk {
    /// Its id (the gold chunk).
    pub id: u64,
    /// Its document's path.
    pub path: String,
    /// Its text.
    pub text: String,
}

impl Rag {
    /// Up to `n` chunks of `collection` drawn uniformly at random without
    /// replacement (reproducible by `seed`), skipping those of fewer than
    /// [`MIN_WORDS`] words; fewer when the collection runs out.
    pub fn sample_chunks(&self, collection: &str, n: usize, seed: u64) -> Result<Vec<SampledChunk>, RagError> {
        let info = self.collection(collection)?;
        if info.chunks == 0 {
            return Err(RagError::Invalid(format!("collection {collection:?} has no chunks to ask about")));
        }
        let mut ids: Vec<u64> = self.chunk_ids(collection)?.into_iter().map(|(id, _)| id).collect();
        SplitMix(seed).shuffle(&mut ids);
        let mut sampled = Vec::with_capacity(n.min(ids.len()));
        for batch in ids.chunks(256) {
            let ranked: Vec<(u64, f64)> = batch.iter().map(|id| (*id, 0.0)).collect();
            for hit in self.hydrate(&ranked)? {
                if hit.text.split_whitespace().count() >= MIN_WORDS {
                    sampled.push(SampledChunk { id: hit.chunk_id, path: hit.path, text: hit.text });
                    if sampled.len() == n {
                        return Ok(sampled);
                    }
                }
            }
        }
        Ok(sampled)
    }
}

/// The request asking for one question `passage` answers (greedy, so a
/// collection and seed give the same questions again).
pub fn question_request(passage: &str) -> GenerateRequest {
    let passage: String = passage.chars().take(MAX_PASSAGE_CHARS).collect();
    let system = "You write search queries. Read a text and write one short question that it answers, the way \
                  a person would type it into a search box, using the text's own key words. Do not mention \
                  \"the text\" or \"the passage\". Reply with the question only.";
    let user = format!("Text:\n\"\"\"\n{}\n\"\"\"\n\nWrite one question this text answers.", passage.trim());
    GenerateRequest {
        prompt: Prompt::Chat(vec![Message::new(Role::System, system), Message::new(Role::User, user)]),
        sampling: SamplingParams { temperature: 0.0, repetition_penalty: 1.1, ..SamplingParams::default() },
        max_tokens: MAX_QUESTION_TOKENS,
        stop: vec!["\n".to_owned()],
        json_schema: None,
    }
}

/// The question in an LLM's reply: its first non-empty line without a
/// label ("Question:", "Q1.", quotes), of 3 to 40 words, not a verbatim
/// copy of the passage and not about "the passage" (a search box never
/// sees one); `None` when the reply holds no such question.
pub fn clean_question(reply: &str, passage: &str) -> Option<String> {
    let line = reply.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut text = line;
    loop {
        let before = text;
        for label in ["question:", "q:", "search question:", "query:"] {
            if text.len() >= label.len() && text[..label.len()].eq_ignore_ascii_case(label) {
                text = text[label.len()..].trim_start();
            }
        }
        // "1." / "Q1." style numbering.
        let unnumbered = text.trim_start_matches(['Q', 'q']).trim_start_matches(|c: char| c.is_ascii_digit());
        if unnumbered.len() < text.len() && (unnumbered.starts_with('.') || unnumbered.starts_with(')')) {
            text = unnumbered[1..].trim_start();
        }
        text = text.trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '`' || c.is_whitespace());
        if text == before {
            break;
        }
    }
    let question = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let words = question.split_whitespace().count();
    if !(3..=40).contains(&words) {
        return None;
    }
    let lower = question.to_lowercase();
    if ["the passage", "this passage", "the text", "this text", "the answer", "the author"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return None;
    }
    let normalized = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let body = question.trim_end_matches(['?', '.', '!']);
    if normalized(passage).contains(&normalized(body)) {
        return None;
    }
    Some(question)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "Tides are caused by the gravity of the Moon and the Sun acting on the oceans.";

    #[test]
    fn labels_numbers_and_quotes_are_stripped() {
        let clean = |reply: &str| clean_question(reply, PASSAGE);
        assert_eq!(clean("What causes tides?").as_deref(), Some("What causes tides?"));
        assert_eq!(
            clean("\n  Question: \"What causes ocean tides?\"\nAnswer: the Moon").as_deref(),
            Some("What causes ocean tides?")
        );
        assert_eq!(clean("Q1. What pulls on the oceans?").as_deref(), Some("What pulls on the oceans?"));
        assert_eq!(clean("1) **Why do tides happen?**").as_deref(), Some("Why do tides happen?"));
        assert_eq!(clean("QUERY: moon   gravity   tides").as_deref(), Some("moon gravity tides"));
    }

    #[test]
    fn copies_fragments_and_rambles_are_rejected() {
        let clean = |reply: &str| clean_question(reply, PASSAGE);
        assert_eq!(clean(""), None);
        assert_eq!(clean("   \n  "), None);
        assert_eq!(clean("Tides?"), None);
        assert_eq!(clean("Tides are caused by the gravity of the Moon."), None);
        assert_eq!(clean(&"why ".repeat(41)), None);
        assert_eq!(clean("How does the passage explain tides?"), None);
        assert_eq!(clean("The passage asks: what is a tide? The answer is:"), None);
    }

    #[test]
    fn the_request_is_greedy_short_and_carries_the_passage() {
        let long = "word ".repeat(1_000);
        let request = question_request(&long);
        assert_eq!(request.sampling.temperature, 0.0);
        assert_eq!(request.max_tokens, MAX_QUESTION_TOKENS);
        let Prompt::Chat(messages) = &request.prompt else { panic!("a chat prompt") };
        assert!(messages[1].content.len() < MAX_PASSAGE_CHARS + 200, "the passage is cut");
        let Prompt::Chat(messages) = question_request(PASSAGE).prompt else { panic!("a chat prompt") };
        assert!(messages[1].content.contains("gravity of the Moon"));
    }
}
