//! HEMA's episodic memory: every tenant's conversations and their turns,
//! written to the journal and acknowledged at once, indexed (BM25 and
//! dense, through `engram-index`'s follower) behind the write, and
//! recalled by a fusion of both with recency.
//!
//! Every read and write names its [`Scope`]: a tenant (or none: the
//! operator's own) and a conversation. The journal queries select by it and
//! the index filters carry it, so one tenant never sees another's turns.

pub mod archive;
pub mod assemble;
pub mod compact;
mod error;
pub mod eval;
pub mod locomo;
pub mod ops;
mod turns;
pub mod when;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use engram_index::{Bm25, Embed, EmbedFn, Filter, Follower, Fusion, IndexError, VectorBackend, fuse};
use engram_models::Embedder;
use engram_ops::{ConversationId, TenantId};
use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Entity, Op, Store, StoreError};
use serde::{Deserialize, Serialize};

pub use archive::{Retention, Select};
pub use compact::{CompactMemory, Summary, SummaryJob, SummaryPrompts};
pub use error::MemoryError;
pub use turns::{INDEX_NAME, SCHEMA, document_text};

/// Whose memory, and of which conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The tenant; `None` is the operator's own memory.
    pub tenant: Option<TenantId>,
    /// The conversation.
    pub conversation: ConversationId,
}

impl Scope {
    /// The tenant column's value: `''` for none.
    pub(crate) fn tenant_key(&self) -> &str {
        self.tenant.as_ref().map_or("", TenantId::as_str)
    }
}

/// A turn to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewTurn {
    /// Who spoke (`user`, `assistant`, a name).
    pub speaker: String,
    /// What was said.
    pub text: String,
    /// When (Unix ms); the time of the append when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
    /// Labels to filter by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How much it matters, 0 to 1 (forgetting keeps important turns longer).
    #[serde(default)]
    pub importance: f32,
    /// Never archived by capacity (an explicit forget still deletes it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

impl NewTurn {
    /// `speaker` saying `text`, now, untagged, of no special importance.
    pub fn new(speaker: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            speaker: speaker.into(),
            text: text.into(),
            time_ms: None,
            tags: Vec::new(),
            importance: 0.0,
            pinned: false,
        }
    }

    /// What is wrong with this turn, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.text.trim().is_empty() {
            return Some("a turn's `text` is empty".into());
        }
        if self.text.len() > ops::MAX_TURN_BYTES {
            return Some(format!(
                "the turn is {} bytes; a turn holds at most {}",
                self.text.len(),
                ops::MAX_TURN_BYTES
            ));
        }
        if self.speaker.trim().is_empty() {
            return Some("a turn's `speaker` is empty".into());
        }
        if !(0.0..=1.0).contains(&self.importance) {
            return Some(format!("`importance` is {}; it goes from 0 to 1", self.importance));
        }
        if self.time_ms.is_some_and(|t| t < 0) {
            return Some("`time_ms` is before 1970".into());
        }
        None
    }
}

/// A stored turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Turn {
    /// Its id in the journal.
    pub id: u64,
    /// Its place in the conversation: 0, 1, 2…
    pub ordinal: u64,
    /// Who spoke.
    pub speaker: String,
    /// What was said, verbatim.
    pub text: String,
    /// When (Unix ms).
    pub time_ms: i64,
    /// Its labels.
    pub tags: Vec<String>,
    /// How much it matters, 0 to 1.
    pub importance: f32,
    /// Never archived by capacity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// Archived: kept here, out of recall until restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
}

/// A recalled turn and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Recalled {
    /// The turn.
    pub turn: Turn,
    /// Its fused score (relevance, plus recency).
    pub score: f64,
}

/// What a recall found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Recollection {
    /// The time the query named, as read (turns said then rank higher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<when::Window>,
    /// The turns, best first.
    pub turns: Vec<Recalled>,
}

/// What to forget: the text of the turns, and everything derived from it
/// (their BM25 entries, vectors and cached embeddings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// One turn, by its place in the conversation.
    Turn(Scope, u64),
    /// The turns said in `[from, to)` (Unix ms).
    Range(Scope, i64, i64),
    /// A whole conversation.
    Conversation(Scope),
    /// Every conversation of a tenant (`None`: the operator's own).
    Tenant(Option<TenantId>),
}

/// A conversation and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConversationInfo {
    /// Its name.
    pub conversation: String,
    /// Its turns.
    pub turns: u64,
    /// When its first turn was appended (Unix ms).
    pub created_at_ms: i64,
    /// Of its turns, those archived (out of recall until restored).
    #[serde(default)]
    pub archived: u64,
}

/// How recall ranks. Every weight is added to a relevance in `[0, 1]`
/// (BM25 and dense scores, each min-max normalised over its candidates,
/// then weighted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallOptions {
    /// How BM25 and dense scores combine.
    pub fusion: Fusion,
    /// Weight of recency (the turn's place in its conversation, 0 oldest
    /// to 1 newest).
    pub recency_weight: f64,
    /// Weight of the more relevant of a turn's two neighbours: an answer
    /// sits next to the question that names its subject.
    pub neighbour_weight: f64,
    /// Added when the query names the turn's speaker.
    pub speaker_weight: f64,
    /// Added when the turn was said in the time the query names.
    pub time_weight: f64,
    /// Candidates drawn from each engine before fusing.
    pub candidates: usize,
}

impl Default for RecallOptions {
    fn default() -> Self {
        Self {
            // BM25 leads: conversation turns are short, and names and rare
            // words carry them (LoCoMo dev, recall@20: 0.846 at 0.7/0.3 and
            // 0.825 at 0.5/0.5, before the other signals).
            fusion: Fusion::Normalized { weights: [0.7, 0.3] },
            recency_weight: 0.02,
            neighbour_weight: 0.45,
            speaker_weight: 0.15,
            time_weight: 0.5,
            candidates: 50,
        }
    }
}

/// The memory engine over one journal and one index directory.
pub struct Memory {
    store: Store,
    index: Follower,
    embedder: Arc<Embedder>,
    options: RecallOptions,
}

impl Memory {
    /// Opens the turns' indexes under `index_dir` (the vectors there, or
    /// on the Qdrant server `vectors` names) for `store`'s journal and
    /// catches them up with it.
    pub fn open(
        store: Store,
        index_dir: &Path,
        embedder: Arc<Embedder>,
        vectors: &VectorBackend,
        options: RecallOptions,
    ) -> Result<Self, MemoryError> {
        let vectors = vectors.open(index_dir, INDEX_NAME, SCHEMA, &embedder.name, embedder.dim())?;
        let bm25 = Bm25::open(&index_dir.join("bm25"), SCHEMA)?;
        let model = embedder.clone();
        let embed: Arc<dyn Embed> = Arc::new(EmbedFn::new(
            embedder.name.clone(),
            embedder.dim(),
            move |texts: &[&str]| Ok(model.embed(texts)?),
        ));
        let index = Follower::new(store.clone(), Box::new(turns::TurnSource), embed, bm25, vectors)?;
        let memory = Self { store, index, embedder, options };
        memory.catch_up()?;
        Ok(memory)
    }

    /// Applies the journal's new turns to the indexes; returns the sequence
    /// reached.
    pub fn catch_up(&self) -> Result<u64, MemoryError> {
        Ok(self.index.catch_up()?)
    }

    /// Appends `turn` to `scope`'s conversation (created with its first
    /// turn) and returns it as stored. Acknowledged once the journal has it;
    /// the indexes follow ([`Memory::catch_up`]).
    pub fn append(&self, scope: &Scope, turn: NewTurn) -> Result<Turn, MemoryError> {
        if let Some(problem) = turn.problem() {
            return Err(MemoryError::Invalid(problem));
        }
        let tags = serde_json::to_string(&turn.tags).map_err(|err| MemoryError::Invalid(err.to_string()))?;
        self.store.write(|tx| {
            let now = tx.at_ms();
            let sql = |source| MemoryError::Store(StoreError::Sqlite { path: self.store.path().to_path_buf(), source });
            let conn = tx.sql();
            conn.execute(
                "INSERT INTO conversations (tenant, name, created_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant, name) DO NOTHING",
                params![scope.tenant_key(), scope.conversation.as_str(), now],
            )
            .map_err(sql)?;
            let conversation: i64 = conn
                .query_row(
                    "SELECT id FROM conversations WHERE tenant = ?1 AND name = ?2",
                    params![scope.tenant_key(), scope.conversation.as_str()],
                    |row| row.get(0),
                )
                .map_err(sql)?;
            let ordinal: i64 = conn
                .query_row(
                    "SELECT coalesce(max(ordinal) + 1, 0) FROM turns WHERE conversation = ?1",
                    params![conversation],
                    |row| row.get(0),
                )
                .map_err(sql)?;
            let time_ms = turn.time_ms.unwrap_or(now);
            conn.execute(
                "INSERT INTO turns (conversation, ordinal, speaker, text, time_ms, tags, importance, pinned) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    conversation,
                    ordinal,
                    turn.speaker,
                    turn.text,
                    time_ms,
                    tags,
                    f64::from(turn.importance),
                    turn.pinned
                ],
            )
            .map_err(sql)?;
            let id = conn.last_insert_rowid();
            tx.record(Entity::Turn, &id.to_string(), Op::Upsert)?;
            Ok(Turn {
                id: id as u64,
                ordinal: ordinal as u64,
                speaker: turn.speaker.clone(),
                text: turn.text.clone(),
                time_ms,
                tags: turn.tags.clone(),
                importance: turn.importance,
                pinned: turn.pinned,
                archived: false,
            })
        })
    }

    /// Deletes what `what` names from the journal, drops the cached
    /// embeddings of its texts, and removes it from the indexes before
    /// returning; answers how many turns were forgotten.
    pub fn forget(&self, what: &Forget) -> Result<u64, MemoryError> {
        let (condition, tenant, name, from, to) = match what {
            Forget::Turn(scope, ordinal) => {
                ("c.name = ?2 AND t.ordinal = ?3", scope.tenant_key(), scope.conversation.as_str(), *ordinal as i64, 0)
            }
            Forget::Range(scope, from, to) => (
                "c.name = ?2 AND t.time_ms >= ?3 AND t.time_ms < ?4",
                scope.tenant_key(),
                scope.conversation.as_str(),
                *from,
                *to,
            ),
            Forget::Conversation(scope) => ("c.name = ?2", scope.tenant_key(), scope.conversation.as_str(), 0, 0),
            Forget::Tenant(tenant) => ("1 = 1", tenant.as_ref().map_or("", TenantId::as_str), "", 0, 0),
        };
        let sql_error =
            |source| MemoryError::Store(StoreError::Sqlite { path: self.store.path().to_path_buf(), source });
        let forgotten = self.store.write(|tx| {
            // Each victim with what its document and the next turn's hold.
            let victims: Vec<Victim> = {
                let mut stmt = tx
                    .sql()
                    .prepare(&format!(
                        "SELECT t.id, t.speaker, t.text, \
                         {previous}, \
                         (SELECT n.id FROM turns n WHERE n.conversation = t.conversation AND n.ordinal = t.ordinal + 1), \
                         (SELECT n.speaker || char(0) || n.text FROM turns n \
                          WHERE n.conversation = t.conversation AND n.ordinal = t.ordinal + 1), \
                         t.conversation, t.ordinal \
                         FROM turns t JOIN conversations c ON c.id = t.conversation \
                         WHERE c.tenant = ?1 AND {condition} ORDER BY t.id",
                        previous = turns::PREVIOUS_TEXT
                    ))
                    .map_err(sql_error)?;
                let count = stmt.parameter_count();
                let values: [&dyn engram_store::rusqlite::ToSql; 4] = [&tenant, &name, &from, &to];
                let rows = stmt
                    .query_map(&values[..count], |row| {
                        let speaker: String = row.get(1)?;
                        let text: String = row.get(2)?;
                        let next = row.get::<_, Option<i64>>(4)?.zip(row.get::<_, Option<String>>(5)?).map(
                            |(id, said)| {
                                let (next_speaker, next_text) = said.split_once('\0').unwrap_or(("", &said));
                                let document = turns::document_text(Some(&text), next_speaker, next_text);
                                (id, next_text.to_owned(), document)
                            },
                        );
                        Ok(Victim {
                            id: row.get(0)?,
                            conversation: row.get(6)?,
                            ordinal: row.get(7)?,
                            document: turns::document_text(row.get::<_, Option<String>>(3)?.as_deref(), &speaker, &text),
                            text,
                            next,
                        })
                    })
                    .map_err(sql_error)?;
                rows.collect::<Result<_, _>>().map_err(sql_error)?
            };
            let forgotten: HashSet<i64> = victims.iter().map(|v| v.id).collect();
            for victim in &victims {
                tx.sql().execute("DELETE FROM turns WHERE id = ?1", params![victim.id]).map_err(sql_error)?;
                tx.record(Entity::Turn, &victim.id.to_string(), Op::Delete)?;
            }
            // Whether a turn still in the journal (outside the re-indexed
            // ones) is indexed as `document` (then its embedding stays).
            let still_indexed = |text: &str, document: &str, reindexed: &HashSet<i64>| -> Result<bool, MemoryError> {
                let mut stmt = tx
                    .sql()
                    .prepare_cached(&format!(
                        "SELECT t.id, t.speaker, t.text, {} FROM turns t WHERE t.text = ?1",
                        turns::PREVIOUS_TEXT
                    ))
                    .map_err(sql_error)?;
                let mut rows = stmt.query(params![text]).map_err(sql_error)?;
                while let Some(row) = rows.next().map_err(sql_error)? {
                    let id: i64 = row.get(0).map_err(sql_error)?;
                    let (speaker, text): (String, String) =
                        (row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?);
                    let previous: Option<String> = row.get(3).map_err(sql_error)?;
                    if !reindexed.contains(&id) && turns::document_text(previous.as_deref(), &speaker, &text) == document {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            // The next turn's document quotes the one before: drop its
            // embedding and index it again without it.
            let reindexed: HashSet<i64> = victims
                .iter()
                .filter_map(|v| v.next.as_ref().map(|(id, ..)| *id))
                .filter(|id| !forgotten.contains(id))
                .collect();
            let documents = victims.iter().flat_map(|v| {
                let next = v.next.as_ref().filter(|(id, ..)| reindexed.contains(id)).map(|(_, text, d)| (text, d));
                std::iter::once((&v.text, &v.document)).chain(next)
            });
            for (text, document) in documents {
                if !still_indexed(text, document, &reindexed)? {
                    self.index.embeddings().forget_in(tx, &engram_index::text_hash(document))?;
                }
            }
            for next in &reindexed {
                tx.record(Entity::Turn, &next.to_string(), Op::Upsert)?;
            }
            // Every summary that covered a forgotten turn goes; the
            // summarizer writes them again from what is left.
            let mut earliest: HashMap<i64, i64> = HashMap::new();
            for victim in &victims {
                let at = earliest.entry(victim.conversation).or_insert(victim.ordinal);
                *at = (*at).min(victim.ordinal);
            }
            for (conversation, ordinal) in earliest {
                let gone: Vec<i64> = {
                    let mut stmt = tx
                        .sql()
                        .prepare_cached("SELECT id FROM summaries WHERE conversation = ?1 AND last_ordinal >= ?2")
                        .map_err(sql_error)?;
                    let rows = stmt.query_map(params![conversation, ordinal], |row| row.get(0)).map_err(sql_error)?;
                    rows.collect::<Result<_, _>>().map_err(sql_error)?
                };
                for id in gone {
                    tx.sql().execute("DELETE FROM summaries WHERE id = ?1", params![id]).map_err(sql_error)?;
                    tx.record(Entity::Summary, &id.to_string(), Op::Delete)?;
                }
                tx.sql()
                    .execute("UPDATE conversations SET epoch = epoch + 1 WHERE id = ?1", params![conversation])
                    .map_err(sql_error)?;
            }
            // A conversation (or tenant) forgotten whole leaves no name behind.
            if matches!(what, Forget::Conversation(_) | Forget::Tenant(_)) {
                let whole = if matches!(what, Forget::Tenant(_)) { "" } else { "AND name = ?2" };
                let sql = format!("DELETE FROM conversations WHERE tenant = ?1 {whole}");
                let mut stmt = tx.sql().prepare(&sql).map_err(sql_error)?;
                let values: [&dyn engram_store::rusqlite::ToSql; 2] = [&tenant, &name];
                stmt.execute(&values[..stmt.parameter_count()]).map_err(sql_error)?;
            }
            Ok::<_, MemoryError>(victims.len() as u64)
        })?;
        self.catch_up()?;
        Ok(forgotten)
    }

    /// The turns of `scope`'s conversation from `ordinal` `from`, oldest
    /// first, at most `limit`.
    pub fn turns(&self, scope: &Scope, from: u64, limit: usize) -> Result<Vec<Turn>, MemoryError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{} WHERE c.tenant = ?1 AND c.name = ?2 AND t.ordinal >= ?3 ORDER BY t.ordinal LIMIT ?4",
                turns::SELECT
            ))?;
            let rows = stmt.query_map(
                params![scope.tenant_key(), scope.conversation.as_str(), from as i64, limit as i64],
                turns::from_row,
            )?;
            rows.collect()
        })?)
    }

    /// `tenant`'s conversations, by name.
    pub fn conversations(&self, tenant: Option<&TenantId>) -> Result<Vec<ConversationInfo>, MemoryError> {
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.name, (SELECT count(*) FROM turns t WHERE t.conversation = c.id), c.created_at_ms, \
                 (SELECT count(*) FROM turns t WHERE t.conversation = c.id AND t.archived = 1) \
                 FROM conversations c WHERE c.tenant = ?1 ORDER BY c.name",
            )?;
            let rows = stmt.query_map(params![tenant.map_or("", TenantId::as_str)], |row| {
                Ok(ConversationInfo {
                    conversation: row.get(0)?,
                    turns: row.get::<_, i64>(1)? as u64,
                    created_at_ms: row.get(2)?,
                    archived: row.get::<_, i64>(3)? as u64,
                })
            })?;
            rows.collect()
        })?)
    }

    /// The `k` turns of `scope`'s conversation that best answer `query`,
    /// best first: BM25 and dense relevance fused, then raised by a
    /// relevant neighbour, by the query naming the speaker, by the turn
    /// falling in the time the query names (read against `now_ms`, the
    /// present when absent) and by recency.
    pub fn recall(
        &self,
        scope: &Scope,
        query: &str,
        k: usize,
        now_ms: Option<i64>,
    ) -> Result<Recollection, MemoryError> {
        let Some(newest) = self.newest(scope)? else {
            return Err(self.no_conversation(scope));
        };
        let o = &self.options;
        let window = when::window_in(query, now_ms.unwrap_or_else(now_ms_wall));
        let filter = turns::filter(scope);
        let n = k.max(o.candidates);
        let vector = self.embedder.embed(&[query])?.pop().unwrap_or_default();
        let bm25 = self.index.bm25().search(query, &filter, n)?;
        let dense = self.index.vectors().search(&vector, &filter, n).map_err(IndexError::from)?;
        let mut relevance: HashMap<u64, f64> = fuse(&[&bm25, &dense], o.fusion).into_iter().collect();
        if let Some(window) = &window {
            // The time named draws its own candidates: a turn said then
            // may rank below the first `n` of the whole conversation.
            let within = filter.clone().range("time", window.from_ms..window.to_ms);
            let bm25 = self.index.bm25().search(query, &within, n)?;
            let dense = self.index.vectors().search(&vector, &within, n).map_err(IndexError::from)?;
            for (id, score) in fuse(&[&bm25, &dense], o.fusion) {
                relevance.entry(id).or_insert(score * 0.5);
            }
        }
        let ids: Vec<u64> = relevance.keys().copied().collect();
        let candidates = self.load(scope, &ids)?;
        let by_ordinal: HashMap<u64, f64> =
            candidates.iter().map(|t| (t.ordinal, relevance.get(&t.id).copied().unwrap_or(0.0))).collect();
        // Neighbours of candidates are candidates too.
        let mut neighbours: Vec<u64> = by_ordinal
            .keys()
            .flat_map(|&o| [o.checked_sub(1), Some(o + 1)])
            .flatten()
            .filter(|o| !by_ordinal.contains_key(o))
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        let mut turns = candidates;
        if o.neighbour_weight > 0.0 {
            turns.extend(self.at_ordinals(scope, &neighbours)?);
        }
        let named: Vec<String> = query.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase).collect();
        let newest = newest.max(1) as f64;
        let mut recalled: Vec<Recalled> = turns
            .into_iter()
            .map(|turn| {
                let own = by_ordinal.get(&turn.ordinal).copied().unwrap_or(0.0);
                let beside = |o: Option<u64>| o.and_then(|o| by_ordinal.get(&o).copied()).unwrap_or(0.0);
                let neighbour = beside(turn.ordinal.checked_sub(1)).max(beside(Some(turn.ordinal + 1)));
                let speaker = named.iter().any(|w| *w == turn.speaker.to_lowercase());
                let in_time = window.as_ref().is_some_and(|w| (w.from_ms..w.to_ms).contains(&turn.time_ms));
                let score = own
                    + o.neighbour_weight * neighbour
                    + if speaker { o.speaker_weight } else { 0.0 }
                    + if in_time { o.time_weight } else { 0.0 }
                    + o.recency_weight * (turn.ordinal as f64 / newest);
                Recalled { score, turn }
            })
            .collect();
        recalled.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.turn.ordinal.cmp(&a.turn.ordinal)));
        recalled.truncate(k);
        Ok(Recollection { time: window, turns: recalled })
    }

    /// `scope`'s conversation row id and forget epoch.
    pub(crate) fn conversation_row(&self, scope: &Scope) -> Result<Option<(i64, i64)>, MemoryError> {
        Ok(self.store.read(|conn| {
            conn.query_row(
                "SELECT id, epoch FROM conversations WHERE tenant = ?1 AND name = ?2",
                params![scope.tenant_key(), scope.conversation.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
        })?)
    }

    /// The error for a conversation `scope` does not have.
    pub(crate) fn no_conversation(&self, scope: &Scope) -> MemoryError {
        let whose = scope.tenant.as_ref().map_or_else(|| "there is".to_owned(), |t| format!("tenant `{t}` has"));
        MemoryError::NotFound(format!("{whose} no conversation `{}` (append a turn to start it)", scope.conversation))
    }

    /// A journal error with the journal's path.
    pub(crate) fn sql_error(&self, source: engram_store::rusqlite::Error) -> MemoryError {
        MemoryError::Store(StoreError::Sqlite { path: self.store.path().to_path_buf(), source })
    }

    /// The newest turn's ordinal in `scope`, `None` without a conversation.
    fn newest(&self, scope: &Scope) -> Result<Option<u64>, MemoryError> {
        let newest = self.store.read(|conn| {
            conn.query_row(
                "SELECT max(t.ordinal) FROM turns t JOIN conversations c ON c.id = t.conversation \
                 WHERE c.tenant = ?1 AND c.name = ?2",
                params![scope.tenant_key(), scope.conversation.as_str()],
                |row| row.get::<_, Option<i64>>(0),
            )
        })?;
        Ok(newest.map(|n| n as u64))
    }

    /// The turns of `scope` at `ordinals` (those that exist and are not archived).
    fn at_ordinals(&self, scope: &Scope, ordinals: &[u64]) -> Result<Vec<Turn>, MemoryError> {
        self.hot_turns(scope, "t.ordinal", ordinals)
    }

    /// The turns with `ids` that belong to `scope` and are not archived
    /// (others are dropped: the journal re-checks what the index answered).
    fn load(&self, scope: &Scope, ids: &[u64]) -> Result<Vec<Turn>, MemoryError> {
        self.hot_turns(scope, "t.id", ids)
    }

    /// The turns of `scope`, not archived, whose `column` is one of
    /// `values` (one query, the values bound as a JSON array).
    fn hot_turns(&self, scope: &Scope, column: &str, values: &[u64]) -> Result<Vec<Turn>, MemoryError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let values = serde_json::to_string(values).map_err(|err| MemoryError::Invalid(err.to_string()))?;
        Ok(self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{} WHERE c.tenant = ?1 AND c.name = ?2 AND t.archived = 0 \
                 AND {column} IN (SELECT value FROM json_each(?3))",
                turns::SELECT
            ))?;
            let rows =
                stmt.query_map(params![scope.tenant_key(), scope.conversation.as_str(), values], turns::from_row)?;
            rows.collect()
        })?)
    }

    /// How far the indexes are, and how many turns each holds.
    pub fn progress(&self) -> Result<engram_index::Progress, MemoryError> {
        Ok(self.index.progress()?)
    }

    /// The text the indexes hold for turn `id` of `scope` (the turn with
    /// its context), `None` when there is no such turn.
    pub fn document(&self, scope: &Scope, id: u64) -> Result<Option<String>, MemoryError> {
        Ok(self.store.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT t.speaker, t.text, {} FROM turns t JOIN conversations c ON c.id = t.conversation \
                     WHERE t.id = ?1 AND c.tenant = ?2 AND c.name = ?3",
                    turns::PREVIOUS_TEXT
                ),
                params![id as i64, scope.tenant_key(), scope.conversation.as_str()],
                |row| {
                    let (speaker, text): (String, String) = (row.get(0)?, row.get(1)?);
                    Ok(turns::document_text(row.get::<_, Option<String>>(2)?.as_deref(), &speaker, &text))
                },
            )
            .optional()
        })?)
    }

    /// Caches `vector` as the embedding of each document text (as
    /// [`document_text`] makes them), so indexing those turns embeds
    /// nothing (benchmarks seed synthetic turns this way).
    pub fn put_embeddings(&self, documents: &[(String, Vec<f32>)]) -> Result<(), MemoryError> {
        let items: Vec<(String, Vec<f32>)> =
            documents.iter().map(|(text, vector)| (engram_index::text_hash(text), vector.clone())).collect();
        Ok(self.index.embeddings().put(&items)?)
    }

    /// Whether an embedding of the document text `text` is cached
    /// (forgetting drops it).
    pub fn is_embedded(&self, text: &str) -> Result<bool, MemoryError> {
        Ok(self.index.embeddings().contains(&[&engram_index::text_hash(text)])?.first().copied().unwrap_or(false))
    }

    /// Turn ids in each index within `scope` (for consistency checks;
    /// archived turns are in neither).
    pub fn index_ids(&self, scope: &Scope) -> Result<(Vec<u64>, Vec<u64>), MemoryError> {
        let stored: i64 = self.store.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM turns t JOIN conversations c ON c.id = t.conversation \
                 WHERE c.tenant = ?1 AND c.name = ?2 AND t.archived = 0",
                params![scope.tenant_key(), scope.conversation.as_str()],
                |row| row.get(0),
            )
        })?;
        // Room for ids the index holds beyond the journal's (which would be a bug to see).
        let (bm25, dense) = self.index.ids(&turns::filter(scope), stored as usize + 16)?;
        let (mut bm25, mut dense): (Vec<u64>, Vec<u64>) = (bm25.into_iter().collect(), dense.into_iter().collect());
        bm25.sort_unstable();
        dense.sort_unstable();
        Ok((bm25, dense))
    }
}

/// The index filter of a scope.
pub fn scope_filter(scope: &Scope) -> Filter {
    turns::filter(scope)
}

/// A turn being forgotten: its id, text and document, and the next turn's
/// id, text and document (which quotes it).
struct Victim {
    id: i64,
    conversation: i64,
    ordinal: i64,
    text: String,
    document: String,
    next: Option<(i64, String, String)>,
}

/// The wall clock, Unix ms.
fn now_ms_wall() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
