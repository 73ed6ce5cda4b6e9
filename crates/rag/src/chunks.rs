//! Chunks as the search engines see them: the fields retrieval filters on,
//! and how a chunk row becomes an index document.

use engram_index::{Document, Field, IndexError, Schema, text_hash};
use engram_store::rusqlite::{OptionalExtension, params};
use engram_store::{Entity, Store};

use crate::Filter;

/// A chunk's id: its row in the journal, what a hit cites and a gold set
/// names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct ChunkId(pub u64);

impl ChunkId {
    /// The journal row id (row ids are positive `i64`s, so this is exact).
    pub fn row(self) -> i64 {
        self.0 as i64
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The chunks' index name (a Qdrant server collection is named after it).
pub const INDEX_NAME: &str = "chunks";

/// The fields a chunk search filters on.
pub const SCHEMA: Schema = Schema {
    fields: &[
        Field::keyword("collection"),
        Field::keyword("tenant").tenant(),
        Field::keyword("path").prefix(),
        Field::keyword("tags").multi(),
        Field::integer("time"),
    ],
};

impl Filter {
    /// The engines' filter for this one.
    pub fn to_index(&self) -> engram_index::Filter {
        let mut filter = engram_index::Filter::all();
        if let Some(collection) = &self.collection {
            filter = filter.is("collection", collection.as_str());
        }
        if let Some(tenant) = &self.tenant {
            filter = filter.is("tenant", tenant.as_str());
        }
        if let Some(prefix) = &self.path_prefix {
            filter = filter.prefix("path", prefix.clone());
        }
        for tag in &self.tags {
            filter = filter.is("tags", tag.clone());
        }
        if let Some(time) = &self.time {
            filter = filter.range("time", time.clone());
        }
        filter
    }
}

/// The text a chunk is indexed and embedded as: its headings, then its text.
pub(crate) fn indexed_text(headings: &[String], text: &str) -> String {
    if headings.is_empty() { text.to_owned() } else { format!("{}\n\n{text}", headings.join(" > ")) }
}

/// The content hash of a chunk as embedded (headings and text): the key of
/// its stored embedding.
pub fn chunk_hash(headings: &[String], text: &str) -> String {
    text_hash(&indexed_text(headings, text))
}

/// Chunk rows, joined with their documents, as index documents.
pub(crate) struct ChunkSource;

impl engram_index::Source for ChunkSource {
    fn entity(&self) -> Entity {
        Entity::Chunk
    }

    fn load(&self, store: &Store, ids: &[u64]) -> Result<Vec<Document>, IndexError> {
        Ok(store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.collection, d.tenant, d.path, d.tags, d.ingested_at, c.headings, c.text \
                 FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id = ?1",
            )?;
            let mut documents = Vec::with_capacity(ids.len());
            for &id in ids {
                let document = stmt
                    .query_row(params![id as i64], |row| {
                        let tenant: String = row.get(1)?;
                        let tags: Vec<String> = serde_json::from_str(&row.get::<_, String>(3)?).unwrap_or_default();
                        let headings: Vec<String> = serde_json::from_str(&row.get::<_, String>(5)?).unwrap_or_default();
                        Ok(Document::new(id, indexed_text(&headings, &row.get::<_, String>(6)?))
                            .keyword("collection", row.get::<_, String>(0)?)
                            .keywords("tenant", (!tenant.is_empty()).then_some(tenant))
                            .keyword("path", row.get::<_, String>(2)?)
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
