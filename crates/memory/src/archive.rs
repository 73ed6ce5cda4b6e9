//! Forgetting by capacity (HEMA's semantic forgetting): when a conversation
//! holds more turns than its capacity, the turns least worth keeping are
//! archived — kept verbatim in the journal, out of the indexes (so recall
//! searches less), restorable. An explicit forget is [`Memory::forget`].
//!
//! A turn's retention is `prior × ½^(age / half-life) + importance`: the
//! prior grows with what the turn says (a bare "ok, thanks" is worth less
//! than a sentence with names and numbers), the decay with how many turns
//! came after it. Pinned turns and the latest few are never archived.

use engram_store::rusqlite::params;
use engram_store::{Entity, Op, WriteTx};

use crate::{Memory, MemoryError, Scope};

/// How forgetting by capacity weighs and bounds a conversation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Most turns a conversation keeps in its indexes; 0 keeps all.
    pub capacity: usize,
    /// A turn's retention halves every this many turns after it.
    pub half_life_turns: f64,
    /// The latest turns, never archived (the prompt carries them anyway).
    pub keep_recent: usize,
}

/// Bytes of text at which a turn's prior reaches 1.
const FULL_PRIOR_BYTES: f64 = 160.0;

impl Retention {
    /// The retention of a turn of `bytes` bytes with `importance`, said
    /// `age` turns before the newest.
    pub fn score(&self, bytes: usize, age: u64, importance: f32) -> f64 {
        let prior = (bytes as f64 / FULL_PRIOR_BYTES).min(1.0);
        let decay = 0.5f64.powf(age as f64 / self.half_life_turns.max(1.0));
        prior * decay + f64::from(importance)
    }
}

/// Which turns to archive or restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// These turns, by ordinal.
    Turns(Vec<u64>),
    /// Every archived turn (for a restore).
    Archived,
}

impl Memory {
    /// Archives the lowest-retention turns of `scope` until at most
    /// `retention.capacity` are left in the indexes (pinned and the latest
    /// `keep_recent` turns stay); answers the ordinals archived. A no-op
    /// below capacity or with capacity 0.
    pub fn archive_over_capacity(&self, scope: &Scope, retention: &Retention) -> Result<Vec<u64>, MemoryError> {
        if retention.capacity == 0 {
            return Ok(Vec::new());
        }
        let Some((conversation, _)) = self.conversation_row(scope)? else {
            return Err(self.no_conversation(scope));
        };
        let sql = |source| self.sql_error(source);
        let archived = self.store.write(|tx| {
            let conn = tx.sql();
            let hot: i64 = conn
                .query_row(
                    "SELECT count(*) FROM turns WHERE conversation = ?1 AND archived = 0",
                    params![conversation],
                    |row| row.get(0),
                )
                .map_err(sql)?;
            let excess = (hot as usize).saturating_sub(retention.capacity);
            if excess == 0 {
                return Ok(Vec::new());
            }
            let newest: i64 = conn
                .query_row("SELECT max(ordinal) FROM turns WHERE conversation = ?1", params![conversation], |row| {
                    row.get(0)
                })
                .map_err(sql)?;
            let mut candidates: Vec<(f64, i64, i64)> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, ordinal, length(CAST(text AS BLOB)), importance FROM turns \
                         WHERE conversation = ?1 AND archived = 0 AND pinned = 0 AND ordinal <= ?2",
                    )
                    .map_err(sql)?;
                let last = newest - retention.keep_recent as i64;
                let rows = stmt
                    .query_map(params![conversation, last], |row| {
                        let (id, ordinal, bytes, importance): (i64, i64, i64, f64) =
                            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                        let score = retention.score(bytes as usize, (newest - ordinal) as u64, importance as f32);
                        Ok((score, ordinal, id))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            };
            // Lowest retention first; of equals, the older.
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            candidates.truncate(excess);
            self.mark(tx, candidates.iter().map(|&(_, ordinal, id)| (ordinal, id)), true)
        })?;
        self.catch_up()?;
        Ok(archived)
    }

    /// Archives the turns of `scope` at `ordinals` (pinned or not); answers
    /// the ordinals that were in the indexes.
    pub fn archive(&self, scope: &Scope, ordinals: &[u64]) -> Result<Vec<u64>, MemoryError> {
        self.set_archived(scope, &Select::Turns(ordinals.to_vec()), true, false)
    }

    /// Restores archived turns of `scope` to the indexes, pinning them when
    /// `pin` (so capacity does not archive them again); answers the
    /// ordinals restored.
    pub fn restore(&self, scope: &Scope, which: &Select, pin: bool) -> Result<Vec<u64>, MemoryError> {
        self.set_archived(scope, which, false, pin)
    }

    fn set_archived(&self, scope: &Scope, which: &Select, archive: bool, pin: bool) -> Result<Vec<u64>, MemoryError> {
        let Some((conversation, _)) = self.conversation_row(scope)? else {
            return Err(self.no_conversation(scope));
        };
        let sql = |source| self.sql_error(source);
        let changed = self.store.write(|tx| {
            let turns: Vec<(i64, i64)> = {
                let mut stmt = tx
                    .sql()
                    .prepare_cached(
                        "SELECT ordinal, id FROM turns WHERE conversation = ?1 AND archived = ?2 ORDER BY ordinal",
                    )
                    .map_err(sql)?;
                let rows = stmt.query_map(params![conversation, !archive], |row| Ok((row.get(0)?, row.get(1)?)));
                rows.map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?
            };
            let chosen = turns.into_iter().filter(|(ordinal, _)| match which {
                Select::Turns(ordinals) => ordinals.contains(&(*ordinal as u64)),
                Select::Archived => true,
            });
            let changed = self.mark(tx, chosen, archive)?;
            if pin {
                for ordinal in &changed {
                    tx.sql()
                        .execute(
                            "UPDATE turns SET pinned = 1 WHERE conversation = ?1 AND ordinal = ?2",
                            params![conversation, *ordinal as i64],
                        )
                        .map_err(sql)?;
                }
            }
            Ok::<_, MemoryError>(changed)
        })?;
        self.catch_up()?;
        Ok(changed)
    }

    /// Marks the turns `(ordinal, id)` archived (or not) and logs each for
    /// the index follower (an archived turn loads as missing); answers the
    /// ordinals.
    fn mark(
        &self,
        tx: &mut WriteTx<'_>,
        turns: impl Iterator<Item = (i64, i64)>,
        archived: bool,
    ) -> Result<Vec<u64>, MemoryError> {
        let mut changed = Vec::new();
        for (ordinal, id) in turns {
            tx.sql()
                .execute("UPDATE turns SET archived = ?1 WHERE id = ?2", params![archived, id])
                .map_err(|source| self.sql_error(source))?;
            tx.record(Entity::Turn, &id.to_string(), Op::Upsert)?;
            changed.push(ordinal as u64);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_decays_with_age_and_grows_with_content_and_importance() {
        let r = Retention { capacity: 10, half_life_turns: 100.0, keep_recent: 2 };
        assert!((r.score(160, 100, 0.0) - 0.5).abs() < 1e-9);
        assert!(r.score(160, 0, 0.0) > r.score(160, 50, 0.0));
        assert!(r.score(20, 0, 0.0) < r.score(160, 0, 0.0));
        assert!(r.score(20, 1000, 0.8) > r.score(160, 50, 0.0));
    }
}
