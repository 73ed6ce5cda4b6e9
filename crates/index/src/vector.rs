//! The dense index: document embeddings behind one trait, [`VectorIndex`],
//! with the embedded backend, [`EdgeIndex`] (qdrant-edge: Qdrant's engine
//! in-process, no server); the server backend is
//! [`crate::qdrant::QdrantIndex`]. Each point carries the filterable
//! fields of its document's [`Schema`] as its payload.
//!
//! Like BM25 it is derived from the journal: [`VectorIndex::commit`]
//! flushes and then records the last journal sequence applied in a small
//! file beside the shard, so a crash in between only makes the next start
//! replay a few (idempotent) changes.

use std::path::{Path, PathBuf};

use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldIndexOperations,
    JsonPath, NamedQuery, Payload, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStructPersisted, QueryEnum, SearchParams, SearchRequestBuilder, UpdateOperation,
    VectorInternal, VectorStructInternal, VectorStructPersisted, WithPayloadInterface,
};
use serde_json::json;

use crate::document::{Condition, Document, FieldKind, Filter, Schema, Value};

/// The vector's name inside the shard.
const VECTOR: &str = "text";
/// The watermark file beside the shard.
const APPLIED: &str = "applied_seq";

/// A vector store failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("vector store: {context}: {message}")]
pub struct VectorError {
    context: String,
    message: String,
}

impl VectorError {
    pub(crate) fn new(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self { context: context.into(), message: message.to_string() }
    }
}

fn err(context: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> VectorError {
    let context = context.into();
    move |message| VectorError { context, message: message.to_string() }
}

/// A document's embedding and the fields searches filter on.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The document's id in the journal.
    pub id: u64,
    /// Its embedding (normalized or not: the index uses cosine).
    pub vector: Vec<f32>,
    /// Its filterable fields.
    pub fields: Vec<(&'static str, Value)>,
}

impl Point {
    /// `document`'s fields with `vector`.
    pub fn new(document: &Document, vector: Vec<f32>) -> Self {
        Self { id: document.id, vector, fields: document.fields.clone() }
    }

    /// The payload stored with the vector, as every backend names it: a
    /// multi-valued field is an array, a single one a scalar, an absent
    /// one missing.
    pub fn payload(&self, schema: &Schema) -> serde_json::Map<String, serde_json::Value> {
        let mut payload = serde_json::Map::new();
        for field in schema.fields {
            let mut values = self.fields.iter().filter(|(name, _)| *name == field.name).map(|(_, value)| match value {
                Value::Keyword(text) => json!(text),
                Value::Integer(number) => json!(number),
            });
            if field.multi {
                payload.insert(field.name.to_owned(), serde_json::Value::Array(values.collect()));
            } else if let Some(value) = values.next() {
                payload.insert(field.name.to_owned(), value);
            }
        }
        payload
    }
}

/// Where document embeddings live and are searched.
pub trait VectorIndex: Send + Sync {
    /// The fields its points carry.
    fn schema(&self) -> &Schema;
    /// Adds or replaces points (by id).
    fn upsert(&self, points: &[Point]) -> Result<(), VectorError>;
    /// Removes points by id (missing ids are fine).
    fn delete(&self, ids: &[u64]) -> Result<(), VectorError>;
    /// Makes the changes durable, recording that the journal is applied up
    /// to `applied_seq`.
    fn commit(&self, applied_seq: u64) -> Result<(), VectorError>;
    /// The last journal sequence committed (0 for a new index).
    fn applied_seq(&self) -> Result<u64, VectorError>;
    /// Points stored.
    fn len(&self) -> Result<u64, VectorError>;
    /// Whether the index holds no point.
    fn is_empty(&self) -> Result<bool, VectorError> {
        Ok(self.len()? == 0)
    }
    /// The `k` points nearest to `vector` within `filter`: (id, cosine
    /// similarity), best first.
    fn search(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError>;
    /// As [`VectorIndex::search`], comparing `vector` with every point
    /// within `filter` (no approximate index), so that the result is a
    /// fixed function of those points: what a coverage certificate needs.
    /// An index whose searches are always exact needs nothing more.
    fn search_exact(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError> {
        self.search(vector, filter, k)
    }
    /// Which engine this is (`edge` or `qdrant`), for the record.
    fn engine(&self) -> &'static str;
}

/// Checks `points` and `filter`-free inputs against `schema` (documents
/// come from features, so a mistake is a bug worth a clear error).
pub(crate) fn check_points(schema: &Schema, points: &[Point]) -> Result<(), VectorError> {
    for point in points {
        let document = Document { id: point.id, fields: point.fields.clone(), text: String::new() };
        schema.check_document(&document).map_err(|e| VectorError::new("upserting", e))?;
    }
    Ok(())
}

/// The embedded index: one qdrant-edge shard in a directory.
pub struct EdgeIndex {
    shard: EdgeShard,
    dir: PathBuf,
    dimension: usize,
    schema: Schema,
}

impl EdgeIndex {
    /// Opens the shard in `dir` (replaying its WAL), or creates one for
    /// `dimension`-sized vectors. A shard made for another dimension is
    /// refused.
    pub fn open(dir: &Path, schema: Schema, dimension: usize) -> Result<Self, VectorError> {
        schema.check().map_err(|e| VectorError::new(format!("opening {}", dir.display()), e))?;
        let shard_dir = dir.join("shard");
        let shard = if shard_dir.join(qdrant_edge::WAL_PATH).exists() || shard_dir.join("edge_config.json").exists() {
            EdgeShard::load(&shard_dir, None).map_err(|e| err(format!("loading {}", shard_dir.display()))(&e))?
        } else {
            std::fs::create_dir_all(&shard_dir).map_err(|e| err(format!("creating {}", shard_dir.display()))(&e))?;
            let config = EdgeConfigBuilder::new()
                .vector(VECTOR, EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build())
                .build();
            EdgeShard::new(&shard_dir, config).map_err(|e| err(format!("creating {}", shard_dir.display()))(&e))?
        };
        let existing = shard.config().vectors.get(VECTOR).map(|v| v.size);
        if existing != Some(dimension) {
            return Err(VectorError {
                context: format!("opening {}", shard_dir.display()),
                message: format!(
                    "the shard holds {existing:?}-dimensional vectors, the embedder makes {dimension}: run `engram reindex`"
                ),
            });
        }
        // Filtered search scans payloads without these (measured: 10x
        // slower at 100k points); creating an existing index is a no-op.
        // Prefix fields are matched by scanning: the shard's keyword index
        // does not serve prefixes.
        for field in schema.fields.iter().filter(|f| !f.prefix) {
            let kind = match field.kind {
                FieldKind::Keyword => PayloadSchemaType::Keyword,
                FieldKind::Integer => PayloadSchemaType::Integer,
            };
            let field = field.name;
            let field_name: JsonPath =
                field.parse().map_err(|()| err("indexing payloads")(&format!("bad field name {field}")))?;
            let operation = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name,
                field_schema: Some(PayloadFieldSchema::FieldType(kind)),
            }));
            shard.update(operation).map_err(|e| err(format!("indexing the payload field {field}"))(&e))?;
        }
        Ok(Self { shard, dir: dir.to_path_buf(), dimension, schema })
    }
}

/// The qdrant filter for `filter` (`None` when it restricts nothing).
fn edge_filter(filter: &Filter) -> Result<Option<qdrant_edge::Filter>, VectorError> {
    if filter.is_empty() {
        return Ok(None);
    }
    let must: Vec<serde_json::Value> = filter
        .must
        .iter()
        .map(|condition| match condition {
            Condition::Is { field, value } => json!({"key": field, "match": {"value": value}}),
            Condition::Prefix { field, prefix } => json!({"key": field, "match": {"prefix": prefix}}),
            Condition::Range { field, range } => json!({"key": field, "range": {"gte": range.start, "lt": range.end}}),
        })
        .collect();
    serde_json::from_value(json!({ "must": must })).map(Some).map_err(|e| err("building a filter")(&e))
}

impl VectorIndex for EdgeIndex {
    fn engine(&self) -> &'static str {
        "edge"
    }

    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn upsert(&self, points: &[Point]) -> Result<(), VectorError> {
        check_points(&self.schema, points)?;
        if let Some(bad) = points.iter().find(|p| p.vector.len() != self.dimension) {
            return Err(VectorError {
                context: format!("upserting point {}", bad.id),
                message: format!("a {}-dimensional vector in a {}-dimensional store", bad.vector.len(), self.dimension),
            });
        }
        let persisted: Vec<PointStructPersisted> = points
            .iter()
            .map(|point| PointStructPersisted {
                id: PointId::NumId(point.id),
                vector: VectorStructPersisted::from(VectorStructInternal::Named(
                    [(VECTOR.to_owned(), VectorInternal::from(point.vector.clone()))].into_iter().collect(),
                )),
                payload: Some(Payload::from(point.payload(&self.schema))),
            })
            .collect();
        let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            PointInsertOperations::PointsList(persisted),
        ));
        self.shard.update(operation).map_err(|e| err(format!("upserting {} points", points.len()))(&e))
    }

    fn delete(&self, ids: &[u64]) -> Result<(), VectorError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids_list: Vec<PointId> = ids.iter().map(|id| PointId::NumId(*id)).collect();
        let operation = UpdateOperation::PointOperation(PointOperations::DeletePoints { ids: ids_list });
        self.shard.update(operation).map_err(|e| err(format!("deleting {} points", ids.len()))(&e))
    }

    fn commit(&self, applied_seq: u64) -> Result<(), VectorError> {
        self.shard.flush().map_err(|e| err("flushing")(&e))?;
        let path = self.dir.join(APPLIED);
        let partial = self.dir.join(format!("{APPLIED}.partial"));
        let written = std::fs::File::create(&partial)
            .and_then(|mut file| {
                use std::io::Write as _;
                file.write_all(applied_seq.to_string().as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&partial, &path));
        written.map_err(|e| err(format!("writing {}", path.display()))(&e))
    }

    fn applied_seq(&self) -> Result<u64, VectorError> {
        let path = self.dir.join(APPLIED);
        match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| err(format!("reading {}", path.display()))(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(err(format!("reading {}", path.display()))(&e)),
        }
    }

    fn len(&self) -> Result<u64, VectorError> {
        let count = self.shard.count(CountRequest { filter: None, exact: true }).map_err(|e| err("counting")(&e))?;
        Ok(count as u64)
    }

    fn search(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError> {
        if vector.len() != self.dimension {
            return Err(VectorError {
                context: "searching".to_owned(),
                message: format!("a {}-dimensional query in a {}-dimensional store", vector.len(), self.dimension),
            });
        }
        self.schema.check_filter(filter).map_err(|e| VectorError::new("searching", e))?;
        let query = QueryEnum::Nearest(NamedQuery::new(VectorInternal::from(vector.to_vec()), VECTOR));
        // Exact search: measured faster than building HNSW at these sizes
        // and never loses recall (see STACK.md).
        let params = SearchParams { exact: true, ..SearchParams::default() };
        let mut request =
            SearchRequestBuilder::new(query, k.max(1)).params(params).with_payload(WithPayloadInterface::Bool(false));
        if let Some(filter) = edge_filter(filter)? {
            request = request.filter(filter);
        }
        let hits = self.shard.search(request.build()).map_err(|e| err("searching")(&e))?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| match hit.id {
                PointId::NumId(id) => Some((id, hit.score)),
                PointId::Uuid(_) => None,
            })
            .collect())
    }
}

/// The sample documents as 3-d points, for the backends' tests.
#[cfg(test)]
pub(crate) fn sample_points() -> Vec<Point> {
    let vectors = [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    crate::document::sample::documents().iter().zip(vectors).map(|(doc, v)| Point::new(doc, v.to_vec())).collect()
}

/// Checks a backend against the sample points: nearest first with cosine
/// scores, every sample filter, changes and the watermark surviving a
/// reopen (`reopen` closes and opens the same index again).
#[cfg(test)]
pub(crate) fn check_backend(
    index: Box<dyn VectorIndex>,
    reopen: &dyn Fn(Box<dyn VectorIndex>) -> Box<dyn VectorIndex>,
) {
    use crate::document::sample;
    let sorted = |hits: Vec<(u64, f32)>| {
        let mut ids: Vec<u64> = hits.into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!((index.len().unwrap(), index.applied_seq().unwrap()), (0, 0));
    index.upsert(&sample_points()).unwrap();
    index.commit(9).unwrap();
    assert_eq!((index.len().unwrap(), index.applied_seq().unwrap()), (4, 9));
    let hits = index.search(&[2.0, 0.0, 0.0], &Filter::all(), 2).unwrap();
    assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2]);
    assert!((hits[0].1 - 1.0).abs() < 1e-4, "{hits:?}");
    for (filter, expected) in sample::filters() {
        assert_eq!(sorted(index.search(&[1.0, 1.0, 1.0], &filter, 10).unwrap()), expected, "{filter:?}");
        // Exact search compares with every point within the filter: the same here.
        let exact = index.search_exact(&[1.0, 1.0, 1.0], &filter, 10).unwrap();
        assert_eq!(exact, index.search(&[1.0, 1.0, 1.0], &filter, 10).unwrap(), "{filter:?}");
    }
    assert!(["edge", "qdrant"].contains(&index.engine()));
    let err = index.search(&[1.0, 0.0], &Filter::all(), 2).unwrap_err().to_string();
    assert!(err.contains("2-dimensional"), "{err}");
    let err = index.search(&[1.0, 0.0, 0.0], &Filter::all().is("colour", "red"), 2).unwrap_err().to_string();
    assert!(err.contains("undeclared"), "{err}");

    let moved = sample::doc(1, "docs", "/a/install.md", &[], 100, "");
    index.upsert(&[Point::new(&moved, vec![0.0, 1.0, 0.0])]).unwrap();
    index.delete(&[4, 99]).unwrap();
    index.commit(12).unwrap();
    let index = reopen(index);
    assert_eq!((index.len().unwrap(), index.applied_seq().unwrap()), (3, 12));
    assert_eq!(sorted(index.search(&[0.0, 1.0, 0.0], &Filter::all(), 2).unwrap()), [1, 3]);
    // The moved point lost its tags.
    assert_eq!(sorted(index.search(&[0.0, 1.0, 0.0], &Filter::all().is("tags", "guide"), 10).unwrap()), [2]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::sample::SCHEMA;

    #[test]
    fn the_embedded_backend_searches_filters_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let index = Box::new(EdgeIndex::open(&path, SCHEMA, 3).unwrap());
        check_backend(index, &|index| {
            drop(index);
            Box::new(EdgeIndex::open(&path, SCHEMA, 3).unwrap())
        });
        let err = EdgeIndex::open(&path, SCHEMA, 384).err().expect("refused").to_string();
        assert!(err.contains("reindex"), "{err}");
    }

    #[test]
    fn payloads_follow_the_schema() {
        let point = &sample_points()[1];
        let payload = serde_json::Value::Object(point.payload(&SCHEMA));
        assert_eq!(
            payload,
            json!({"collection": "docs", "tenant": "acme", "path": "/a/usage.md", "tags": ["guide", "cli"], "time": 200})
        );
        let untenanted = serde_json::Value::Object(sample_points()[0].payload(&SCHEMA));
        assert!(untenanted.get("tenant").is_none() && untenanted["tags"] == json!(["guide"]));
    }
}

/// Where an index's vectors live.
#[derive(Debug, Clone, Default)]
pub enum VectorBackend {
    /// qdrant-edge under the index directory.
    #[default]
    Edge,
    /// A collection of its own on a Qdrant server or cluster.
    Qdrant(crate::QdrantOptions),
}

impl VectorBackend {
    /// Opens index `name`'s vectors of `dim` dimensions from embedder
    /// `embedder`: under `<index_dir>/vectors/<embedder>`, or in the
    /// server's collection for that index and embedder.
    pub fn open(
        &self,
        index_dir: &Path,
        name: &str,
        schema: Schema,
        embedder: &str,
        dim: usize,
    ) -> Result<Box<dyn VectorIndex>, crate::IndexError> {
        Ok(match self {
            Self::Edge => Box::new(EdgeIndex::open(&index_dir.join("vectors").join(embedder), schema, dim)?),
            Self::Qdrant(server) => {
                Box::new(crate::QdrantIndex::open(server, &server.collection(name, embedder), schema, dim)?)
            }
        })
    }
}
