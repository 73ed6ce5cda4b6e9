//! The dense index: chunk embeddings behind one trait, [`VectorStore`],
//! with the embedded backend, [`EdgeStore`] (qdrant-edge: Qdrant's engine
//! in-process, no server); the server backend is
//! [`crate::qdrant_server::QdrantStore`].
//!
//! Like BM25 it is derived from the journal: [`VectorStore::commit`]
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

use crate::Filter;

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

/// A chunk's embedding and the fields searches filter on.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    /// The chunk's id in the journal.
    pub id: u64,
    /// Its embedding (normalized or not: the store uses cosine).
    pub vector: Vec<f32>,
    /// Its collection.
    pub collection: String,
    /// Its tenant, if any.
    pub tenant: Option<String>,
    /// Its document's path.
    pub path: String,
    /// Its document's tags.
    pub tags: Vec<String>,
    /// When its document was ingested (Unix seconds).
    pub time: i64,
}

impl VectorPoint {
    /// The fields stored with the vector, as every backend names them.
    pub fn payload(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("collection".into(), json!(self.collection));
        fields.insert("tenant".into(), json!(self.tenant));
        fields.insert("path".into(), json!(self.path));
        fields.insert("tags".into(), json!(self.tags));
        fields.insert("time".into(), json!(self.time));
        fields
    }
}

/// Where chunk embeddings live and are searched.
pub trait VectorStore: Send + Sync {
    /// Adds or replaces points (by id).
    fn upsert(&self, points: &[VectorPoint]) -> Result<(), VectorError>;
    /// Removes points by id (missing ids are fine).
    fn delete(&self, ids: &[u64]) -> Result<(), VectorError>;
    /// Makes the changes durable, recording that the journal is applied up
    /// to `applied_seq`.
    fn commit(&self, applied_seq: u64) -> Result<(), VectorError>;
    /// The last journal sequence committed (0 for a new store).
    fn applied_seq(&self) -> Result<u64, VectorError>;
    /// Points stored.
    fn len(&self) -> Result<u64, VectorError>;
    /// Whether the store holds no point.
    fn is_empty(&self) -> Result<bool, VectorError> {
        Ok(self.len()? == 0)
    }
    /// The `k` points nearest to `vector` within `filter`: (chunk id,
    /// cosine similarity), best first.
    fn search(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError>;
}

/// The embedded store: one qdrant-edge shard in a directory.
pub struct EdgeStore {
    shard: EdgeShard,
    dir: PathBuf,
    dimension: usize,
}

impl EdgeStore {
    /// Opens the shard in `dir` (replaying its WAL), or creates one for
    /// `dimension`-sized vectors. A shard made for another dimension is
    /// refused.
    pub fn open(dir: &Path, dimension: usize) -> Result<Self, VectorError> {
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
        for (field, kind) in [
            ("collection", PayloadSchemaType::Keyword),
            ("tenant", PayloadSchemaType::Keyword),
            ("tags", PayloadSchemaType::Keyword),
            ("time", PayloadSchemaType::Integer),
        ] {
            let field_name: JsonPath =
                field.parse().map_err(|()| err("indexing payloads")(&format!("bad field name {field}")))?;
            let operation = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name,
                field_schema: Some(PayloadFieldSchema::FieldType(kind)),
            }));
            shard.update(operation).map_err(|e| err(format!("indexing the payload field {field}"))(&e))?;
        }
        Ok(Self { shard, dir: dir.to_path_buf(), dimension })
    }

    fn payload(point: &VectorPoint) -> Payload {
        Payload::from(point.payload())
    }
}

/// The qdrant filter for `filter` (`None` when it restricts nothing).
fn edge_filter(filter: &Filter) -> Result<Option<qdrant_edge::Filter>, VectorError> {
    let mut must = Vec::new();
    if let Some(collection) = &filter.collection {
        must.push(json!({"key": "collection", "match": {"value": collection}}));
    }
    if let Some(tenant) = &filter.tenant {
        must.push(json!({"key": "tenant", "match": {"value": tenant}}));
    }
    if let Some(prefix) = &filter.path_prefix {
        must.push(json!({"key": "path", "match": {"prefix": prefix}}));
    }
    for tag in &filter.tags {
        must.push(json!({"key": "tags", "match": {"value": tag}}));
    }
    if let Some(time) = &filter.time {
        must.push(json!({"key": "time", "range": {"gte": time.start, "lt": time.end}}));
    }
    if must.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(json!({ "must": must })).map(Some).map_err(|e| err("building a filter")(&e))
}

impl VectorStore for EdgeStore {
    fn upsert(&self, points: &[VectorPoint]) -> Result<(), VectorError> {
        if let Some(bad) = points.iter().find(|p| p.vector.len() != self.dimension) {
            return Err(VectorError {
                context: format!("upserting chunk {}", bad.id),
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
                payload: Some(Self::payload(point)),
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

/// A 3-d point for the backends' tests (even ids belong to tenant "acme").
#[cfg(test)]
pub(crate) fn point(id: u64, vector: [f32; 3], collection: &str, path: &str, tags: &[&str], time: i64) -> VectorPoint {
    VectorPoint {
        id,
        vector: vector.to_vec(),
        collection: collection.into(),
        tenant: id.is_multiple_of(2).then(|| "acme".to_owned()),
        path: path.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        time,
    }
}

/// The four points both backends' tests search and filter.
#[cfg(test)]
pub(crate) fn sample_points() -> Vec<VectorPoint> {
    vec![
        point(1, [1.0, 0.0, 0.0], "docs", "/a/install.md", &["guide"], 100),
        point(2, [0.9, 0.1, 0.0], "docs", "/a/usage.md", &["guide", "cli"], 200),
        point(3, [0.0, 1.0, 0.0], "notes", "/b/todo.txt", &[], 300),
        point(4, [0.0, 0.0, 1.0], "docs", "/b/cats.md", &["pets"], 400),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> EdgeStore {
        let store = EdgeStore::open(dir, 3).unwrap();
        store.upsert(&sample_points()).unwrap();
        store.commit(9).unwrap();
        store
    }

    fn ids(hits: &[(u64, f32)]) -> Vec<u64> {
        let mut ids: Vec<u64> = hits.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn nearest_points_come_first_with_cosine_scores() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample(dir.path());
        let hits = store.search(&[2.0, 0.0, 0.0], &Filter::default(), 2).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 2]);
        assert!((hits[0].1 - 1.0).abs() < 1e-5, "{hits:?}");
        assert_eq!((store.len().unwrap(), store.applied_seq().unwrap()), (4, 9));
        let err = store.search(&[1.0, 0.0], &Filter::default(), 2).unwrap_err().to_string();
        assert!(err.contains("2-dimensional query"), "{err}");
    }

    #[test]
    fn filters_restrict_by_collection_tenant_path_tags_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = sample(dir.path());
        let q = [1.0, 1.0, 1.0];
        let all = |filter: Filter| ids(&store.search(&q, &filter, 10).unwrap());
        assert_eq!(all(Filter { collection: Some("docs".into()), ..Filter::default() }), [1, 2, 4]);
        assert_eq!(all(Filter { tenant: Some("acme".into()), ..Filter::default() }), [2, 4]);
        assert_eq!(all(Filter { path_prefix: Some("/b/".into()), ..Filter::default() }), [3, 4]);
        assert_eq!(all(Filter { tags: vec!["guide".into(), "cli".into()], ..Filter::default() }), [2]);
        assert_eq!(all(Filter { time: Some(150..400), ..Filter::default() }), [2, 3]);
    }

    #[test]
    fn changes_survive_reopening_and_a_wrong_dimension_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = sample(dir.path());
            store.upsert(&[point(1, [0.0, 1.0, 0.0], "docs", "/a/install.md", &[], 100)]).unwrap();
            store.delete(&[4, 99]).unwrap();
            store.commit(12).unwrap();
        }
        let store = EdgeStore::open(dir.path(), 3).unwrap();
        assert_eq!((store.len().unwrap(), store.applied_seq().unwrap()), (3, 12));
        let hits = store.search(&[0.0, 1.0, 0.0], &Filter::default(), 2).unwrap();
        assert_eq!(ids(&hits), [1, 3]);
        drop(store);
        let err = EdgeStore::open(dir.path(), 384).err().expect("refused").to_string();
        assert!(err.contains("reindex"), "{err}");
    }
}
