//! Turns as the search engines see them: the fields recall filters on, and
//! how a turn row becomes an index document and a [`Turn`].

use engram_index::{Document, Field, Filter, IndexError, Schema};
use engram_store::rusqlite::{self, OptionalExtension, params};
use engram_store::{Entity, Store};

use crate::{Scope, Turn};

/// The turns' index name.
pub const INDEX_NAME: &str = "turns";

/// The fields a recall filters on.
pub const SCHEMA: Schema = Schema {
    fields: &[
        Field::keyword("tenant").tenant(),
        // `<tenant>/<conversation>` (`/<conversation>` for the operator's
        // own): one conversation of one tenant, whatever others named theirs.
        Field::keyword("scope"),
        Field::keyword("speaker"),
        Field::keyword("tags").multi(),
        Field::integer("time"),
    ],
};

/// The `scope` keyword of a tenant's (`""`: the operator's) conversation.
/// Tenant ids hold no `/`, so no two scopes share one.
pub(crate) fn scope_key(tenant: &str, conversation: &str) -> String {
    format!("{tenant}/{conversation}")
}

/// The index filter of `scope`.
pub(crate) fn filter(scope: &Scope) -> Filter {
    let filter = Filter::all().is("scope", scope_key(scope.tenant_key(), scope.conversation.as_str()));
    match &scope.tenant {
        Some(tenant) => filter.is("tenant", tenant.as_str()),
        None => filter,
    }
}

/// The text of the turn before `t` (`NULL` for the first), the context
/// [`document_text`] indexes a turn with.
pub(crate) const PREVIOUS_TEXT: &str =
    "(SELECT p.text FROM turns p WHERE p.conversation = t.conversation AND p.ordinal = t.ordinal - 1)";

/// The columns [`from_row`] reads, from `turns t JOIN conversations c`.
pub(crate) const SELECT: &str = "SELECT t.id, t.ordinal, t.speaker, t.text, t.time_ms, t.tags, t.importance, \
     t.pinned, t.archived \
     FROM turns t JOIN conversations c ON c.id = t.conversation";

/// A [`SELECT`] row as a turn.
pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Turn> {
    Ok(Turn {
        id: row.get::<_, i64>(0)? as u64,
        ordinal: row.get::<_, i64>(1)? as u64,
        speaker: row.get(2)?,
        text: row.get(3)?,
        time_ms: row.get(4)?,
        tags: serde_json::from_str(&row.get::<_, String>(5)?).unwrap_or_default(),
        importance: row.get::<_, f64>(6)? as f32,
        pinned: row.get(7)?,
        archived: row.get(8)?,
    })
}

/// Turn rows, joined with their conversations, as index documents. An
/// archived turn loads as missing, so the follower drops it from the
/// indexes (and its restore brings it back).
pub(crate) struct TurnSource;

impl engram_index::Source for TurnSource {
    fn entity(&self) -> Entity {
        Entity::Turn
    }

    fn load(&self, store: &Store, ids: &[u64]) -> Result<Vec<Document>, IndexError> {
        Ok(store.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT c.tenant, c.name, t.speaker, t.tags, t.time_ms, t.text, {PREVIOUS_TEXT} \
                 FROM turns t JOIN conversations c ON c.id = t.conversation WHERE t.id = ?1 AND t.archived = 0"
            ))?;
            let mut documents = Vec::with_capacity(ids.len());
            for &id in ids {
                let document = stmt
                    .query_row(params![id as i64], |row| {
                        let tenant: String = row.get(0)?;
                        let speaker: String = row.get(2)?;
                        let tags: Vec<String> = serde_json::from_str(&row.get::<_, String>(3)?).unwrap_or_default();
                        let scope = scope_key(&tenant, &row.get::<_, String>(1)?);
                        let text = document_text(
                            row.get::<_, Option<String>>(6)?.as_deref(),
                            &speaker,
                            &row.get::<_, String>(5)?,
                        );
                        Ok(Document::new(id, text)
                            .keywords("tenant", (!tenant.is_empty()).then_some(tenant))
                            .keyword("scope", scope)
                            .keyword("speaker", speaker)
                            .keywords("tags", tags)
                            .integer("time", row.get(4)?))
                    })
                    .optional()?;
                documents.extend(document);
            }
            Ok(documents)
        })?)
    }
}

/// What the engines index for a turn: the turn said just before it (an
/// answer is found by the words of the question it answers), then the
/// speaker's name and the turn.
pub fn document_text(previous: Option<&str>, speaker: &str, text: &str) -> String {
    match previous {
        Some(previous) => format!("{previous}\n{speaker}: {text}"),
        None => format!("{speaker}: {text}"),
    }
}
