//! LoCoMo (long conversations with question-answer pairs) as evaluation
//! data: each sample's sessions become turns with the session's date, and
//! each question names the turns (`D<session>:<turn>`) holding its evidence.
//!
//! The file is the LoCoMo release's JSON: a list of samples, each with
//! `conversation` (`speaker_a`, `speaker_b`, `session_<n>` turn lists and
//! `session_<n>_date_time` strings such as `1:56 pm on 8 May, 2023`) and
//! `qa` (`question`, `answer`, `evidence`, `category`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::NewTurn;

/// LoCoMo's question categories, by their number in the data.
pub const CATEGORIES: [(u8, &str); 5] =
    [(1, "multi-hop"), (2, "temporal"), (3, "open-domain"), (4, "single-hop"), (5, "adversarial")];

/// The name of category `n`.
pub fn category_name(n: u8) -> &'static str {
    CATEGORIES.iter().find(|(c, _)| *c == n).map_or("other", |(_, name)| name)
}

/// One conversation and its questions.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's id (`conv-26`...).
    pub id: String,
    /// Its turns in order, each with its LoCoMo id (`D1:3`).
    pub turns: Vec<(String, NewTurn)>,
    /// Its two speakers' names.
    pub speakers: Vec<String>,
    /// Its sessions in order.
    pub sessions: Vec<Session>,
    /// Its questions.
    pub questions: Vec<Question>,
}

/// One session of a conversation.
#[derive(Debug, Clone)]
pub struct Session {
    /// The turns before its end (an index into [`Sample::turns`]).
    pub end: usize,
    /// LoCoMo's own summary of the conversation's sessions so far, when
    /// the file has one.
    pub summary: Option<String>,
}

/// A question about one conversation.
#[derive(Debug, Clone)]
pub struct Question {
    /// The question.
    pub question: String,
    /// The gold answer (absent for adversarial questions).
    pub answer: Option<String>,
    /// The ids of the turns holding the evidence.
    pub evidence: Vec<String>,
    /// Its category (see [`CATEGORIES`]).
    pub category: u8,
}

#[derive(Deserialize)]
struct RawSample {
    sample_id: String,
    conversation: BTreeMap<String, serde_json::Value>,
    qa: Vec<RawQuestion>,
    #[serde(default)]
    session_summary: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawQuestion {
    question: String,
    #[serde(default)]
    answer: Option<serde_json::Value>,
    #[serde(default)]
    evidence: Vec<String>,
    category: u8,
}

#[derive(Deserialize)]
struct RawTurn {
    speaker: String,
    dia_id: String,
    text: String,
    #[serde(default)]
    blip_caption: Option<String>,
}

/// Reads a LoCoMo file.
pub fn load(path: &Path) -> Result<Vec<Sample>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let raw: Vec<RawSample> =
        serde_json::from_str(&text).map_err(|err| format!("{} is not LoCoMo JSON: {err}", path.display()))?;
    raw.into_iter().map(sample).collect::<Result<_, _>>().map_err(|err| format!("{}: {err}", path.display()))
}

fn sample(raw: RawSample) -> Result<Sample, String> {
    let mut sessions: Vec<(u32, &serde_json::Value)> = raw
        .conversation
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix("session_")?.parse().ok()?, value)))
        .collect();
    sessions.sort_by_key(|(n, _)| *n);
    let mut turns = Vec::new();
    let mut ends = Vec::new();
    for (n, value) in sessions {
        let key = format!("session_{n}_date_time");
        let date = raw
            .conversation
            .get(&key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("sample {}: session {n} has no `{key}`", raw.sample_id))?;
        let start = parse_session_time(date).map_err(|err| format!("sample {}: `{key}`: {err}", raw.sample_id))?;
        let list: Vec<RawTurn> = serde_json::from_value(value.clone())
            .map_err(|err| format!("sample {}: session {n}: {err}", raw.sample_id))?;
        for (i, turn) in list.into_iter().enumerate() {
            // A shared photo is part of what was said: its caption is how a
            // text-only memory sees it.
            let text = match turn.blip_caption {
                Some(caption) => format!("{} [shares a photo of {caption}]", turn.text),
                None => turn.text,
            };
            // Turns of one session are a few seconds apart, in order.
            let time_ms = start + i as i64 * 10_000;
            turns.push((turn.dia_id, NewTurn { time_ms: Some(time_ms), ..NewTurn::new(turn.speaker, text) }));
        }
        let summary = raw.session_summary.get(&format!("session_{n}_summary")).and_then(|v| v.as_str());
        ends.push(Session { end: turns.len(), summary: summary.map(str::to_owned) });
    }
    let speakers = ["speaker_a", "speaker_b"]
        .iter()
        .filter_map(|key| raw.conversation.get(*key)?.as_str().map(str::to_owned))
        .collect();
    let questions = raw
        .qa
        .into_iter()
        .map(|q| Question {
            question: q.question,
            answer: q.answer.map(|a| match a {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            // Some evidence lists pack several ids in one string.
            evidence: q
                .evidence
                .iter()
                .flat_map(|e| e.split([';', ',', ' ']))
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            category: q.category,
        })
        .collect();
    Ok(Sample { id: raw.sample_id, turns, speakers, sessions: ends, questions })
}

/// A session date such as `1:56 pm on 8 May, 2023`, as Unix ms (UTC).
pub fn parse_session_time(text: &str) -> Result<i64, String> {
    let normal = text.trim().to_ascii_uppercase();
    let time = jiff::civil::DateTime::strptime("%I:%M %p ON %d %B, %Y", &normal)
        .map_err(|err| format!("cannot read the date {text:?}: {err}"))?;
    let at = jiff::tz::TimeZone::UTC.to_timestamp(time).map_err(|err| err.to_string())?;
    Ok(at.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_dates_read_as_utc() {
        assert_eq!(parse_session_time("1:56 pm on 8 May, 2023"), Ok(1_683_554_160_000));
        assert_eq!(parse_session_time("10:37 am on 27 June, 2023"), Ok(1_687_862_220_000));
        assert!(parse_session_time("yesterday").is_err());
    }
}
