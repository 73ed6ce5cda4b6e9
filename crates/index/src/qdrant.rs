//! The server backend of [`VectorIndex`]: one collection on a Qdrant
//! server or cluster, over gRPC (qdrant-client), for corpora past one
//! machine. Each kind of document (its [`Schema`]) has its own collection.
//!
//! The journal watermark lives in the collection itself, as the payload of
//! a reserved point ([`META_ID`]) that every search and count excludes: a
//! server that loses or replaces the collection then starts from 0 and the
//! next open replays the journal, instead of trusting a local file that no
//! longer describes the server.
//!
//! qdrant-client is async and the trait is not: the store owns a one-worker
//! tokio runtime, and each call runs on it from a scoped thread, so it
//! works from plain threads, `spawn_blocking` and async tasks alike.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use qdrant_client::qdrant::{
    Condition as Condition_, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter as QdrantFilter,
    GetPointsBuilder, KeywordIndexParamsBuilder, PointStruct, PointsIdsList, Query, QueryPointsBuilder, Range,
    SearchParamsBuilder, UpsertPointsBuilder, VectorParamsBuilder, WriteOrdering, WriteOrderingType,
    payload_index_params, point_id::PointIdOptions, value::Kind, vectors_config,
};
use qdrant_client::{Qdrant, QdrantError};
use serde_json::json;

use crate::document::{Condition, FieldKind, Filter, Schema};
use crate::vector::{Point, VectorError, VectorIndex, check_points};

/// The reserved point holding the journal watermark: a UUID, which no
/// document id (a number) can collide with.
pub const META_ID: &str = "6a3b0c2e-9d1f-4e7a-8b5c-2f0d4e6a8c1b";
/// The watermark's payload key.
const APPLIED_KEY: &str = "engram_applied_seq";
/// Points per upsert request (384-d: about 0.5 MiB each).
const UPSERT_BATCH: usize = 256;
/// The oldest server this store talks to: qdrant-client 1.20 sends dense
/// vectors in the `Vector.dense` field, which servers read since 1.13.
const MIN_SERVER: (u64, u64) = (1, 13);
/// The oldest server with path prefix filters (`match.prefix`).
const PREFIX_SERVER: (u64, u64) = (1, 19);

/// Where the server is and how to talk to it.
#[derive(Clone)]
pub struct QdrantOptions {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<String>,
    /// Collections are named `<prefix>-<index>-<embedder>`.
    pub collection_prefix: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for QdrantOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collection_prefix", &self.collection_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl QdrantOptions {
    /// The collection holding `index`'s vectors made by `embedder`: the
    /// prefix, the index name and the embedder's name, dash-separated, with
    /// anything but letters, digits, `-` and `_` replaced by `_`.
    pub fn collection(&self, index: &str, embedder: &str) -> String {
        format!("{}-{}-{}", self.collection_prefix, clean(index), clean(embedder))
    }

    /// The name retrieval's collection had before each index had its own
    /// (`<prefix>-<embedder>`); `engram reindex` drops it.
    pub fn legacy_collection(&self, embedder: &str) -> String {
        format!("{}-{}", self.collection_prefix, clean(embedder))
    }
}

/// `name` with anything but letters, digits, `-` and `_` replaced by `_`.
fn clean(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Document embeddings in a collection of a Qdrant server.
pub struct QdrantIndex {
    client: Qdrant,
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    collection: String,
    dimension: usize,
    schema: Schema,
    /// The server's `major.minor`, once checked.
    server: (u64, u64),
}

impl QdrantIndex {
    /// Connects to the server and opens `collection`, creating it (cosine,
    /// `dimension`) with its payload indexes when missing. A collection of
    /// another dimension or layout is refused, as is a server older than
    /// 1.13, one that cannot be reached, or one that refuses the API key.
    /// Prefix filters need 1.19.
    pub fn open(
        options: &QdrantOptions,
        collection: &str,
        schema: Schema,
        dimension: usize,
    ) -> Result<Self, VectorError> {
        schema.check().map_err(|e| VectorError::new(format!("opening {collection}"), e))?;
        let mut store = Self::connect(options, collection)?;
        store.dimension = dimension;
        store.schema = schema;
        store.check_server()?;
        store.ensure_collection()?;
        Ok(store)
    }

    /// Deletes `collection` from the server (a no-op when it is missing):
    /// `engram reindex` then rebuilds it from the journal.
    pub fn drop_collection(options: &QdrantOptions, collection: &str) -> Result<(), VectorError> {
        let mut store = Self::connect(options, collection)?;
        store.check_server()?;
        let client = &store.client;
        if store.run("checking the collection", client.collection_exists(collection))? {
            store.run("deleting the collection", client.delete_collection(collection))?;
        }
        Ok(())
    }

    /// The version of the server `options` names, if it answers and is new
    /// enough (`engram doctor`).
    pub fn probe(options: &QdrantOptions) -> Result<String, VectorError> {
        let mut store = Self::connect(options, "")?;
        store.check_server()?;
        let (major, minor) = store.server;
        let prefixes = if store.filters_prefixes() { "" } else { " (no prefix filters before 1.19)" };
        Ok(format!("Qdrant {major}.{minor}{prefixes}"))
    }

    /// A client for `collection` (connections are made on first use).
    fn connect(options: &QdrantOptions, collection: &str) -> Result<Self, VectorError> {
        // The client would echo a key it cannot send into its error.
        if let Some(key) = &options.api_key
            && (key.is_empty() || key.bytes().any(|b| !(0x21..0x7f).contains(&b)))
        {
            return Err(VectorError::new(
                format!("connecting to {}", options.url),
                "the API key is empty or holds spaces or characters outside printable ASCII",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("engram-qdrant")
            .enable_all()
            .build()
            .map_err(|e| VectorError::new("starting the Qdrant client's runtime", e))?;
        let client = Qdrant::from_url(&options.url)
            .api_key(options.api_key.clone())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            // Its own check prints to stdout (the MCP channel); ours is
            // `check_server`.
            .skip_compatibility_check()
            .build()
            .map_err(|e| VectorError::new(format!("connecting to {}", options.url), e))?;
        Ok(Self {
            client,
            runtime: Some(runtime),
            url: options.url.clone(),
            collection: collection.to_owned(),
            dimension: 0,
            schema: Schema { fields: &[] },
            server: (0, 0),
        })
    }

    /// Runs one client call on the store's runtime and waits for it.
    fn run<T, F>(&self, what: &str, call: F) -> Result<T, VectorError>
    where
        F: Future<Output = Result<T, QdrantError>> + Send,
        T: Send,
    {
        let context = || format!("{what} ({} at {})", self.collection, self.url);
        let Some(runtime) = &self.runtime else {
            return Err(VectorError::new(context(), "the client is shut down"));
        };
        let handle = runtime.handle();
        // A scoped thread: `block_on` is refused on a thread that is
        // already driving async tasks, and callers may be on one.
        let outcome = std::thread::scope(|scope| scope.spawn(|| handle.block_on(call)).join());
        match outcome {
            Ok(result) => result.map_err(|e| VectorError::new(context(), describe(&e))),
            Err(_) => Err(VectorError::new(context(), "the client call panicked")),
        }
    }

    /// Checks the server's version, then makes one call that needs the API
    /// key (the health check does not).
    fn check_server(&mut self) -> Result<(), VectorError> {
        let reply = self.run("reaching the server", self.client.health_check())?;
        match parse_version(&reply.version) {
            Some(version) if version >= MIN_SERVER => {
                self.server = version;
                self.run("listing collections", self.client.list_collections())?;
                Ok(())
            }
            _ => Err(VectorError::new(
                format!("checking the server at {}", self.url),
                format!(
                    "Qdrant {} is older than {}.{}, the oldest engram supports",
                    reply.version, MIN_SERVER.0, MIN_SERVER.1
                ),
            )),
        }
    }

    /// Whether the server filters by prefix (Qdrant 1.19 or newer).
    pub fn filters_prefixes(&self) -> bool {
        self.server >= PREFIX_SERVER
    }

    fn ensure_collection(&self) -> Result<(), VectorError> {
        let client = &self.client;
        if !self.run("checking the collection", client.collection_exists(self.collection.as_str()))? {
            let create = CreateCollectionBuilder::new(&self.collection)
                .vectors_config(VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine));
            if let Err(err) = self.run("creating the collection", client.create_collection(create)) {
                // Another daemon sharing the server may have just made it.
                if !self.run("checking the collection", client.collection_exists(self.collection.as_str()))? {
                    return Err(err);
                }
            }
        }
        let info = self.run("reading the collection", client.collection_info(self.collection.as_str()))?;
        let info = info.result.ok_or_else(|| VectorError::new("reading the collection", "the server sent no info"))?;
        let params = info.config.and_then(|c| c.params).and_then(|p| p.vectors_config).and_then(|v| v.config);
        match params {
            Some(vectors_config::Config::Params(p)) if p.size == self.dimension as u64 => {
                if p.distance != Distance::Cosine as i32 {
                    return Err(self.layout_error("does not use cosine distance"));
                }
            }
            Some(vectors_config::Config::Params(p)) => {
                return Err(self.layout_error(&format!(
                    "holds {}-dimensional vectors, the embedder makes {}",
                    p.size, self.dimension
                )));
            }
            _ => return Err(self.layout_error("has named vectors (it was not made by engram)")),
        }
        // Filtered search scans payloads without these; the tenant index
        // also groups each tenant's points together on disk.
        for field in self.schema.fields {
            let name = field.name;
            let (kind, params) = match field.kind {
                FieldKind::Keyword => {
                    let params = KeywordIndexParamsBuilder::default().is_tenant(field.tenant).prefix(field.prefix);
                    (FieldType::Keyword, Some(params))
                }
                FieldKind::Integer => (FieldType::Integer, None),
            };
            if let Some(existing) = info.payload_schema.get(name) {
                // Made before the server knew prefixes (it dropped the
                // option): prefix filters would scan. Rebuild it.
                let has_prefix = matches!(
                    existing.params.as_ref().and_then(|p| p.index_params.as_ref()),
                    Some(payload_index_params::IndexParams::KeywordIndexParams(k)) if k.prefix.is_some()
                );
                if !(field.prefix && self.filters_prefixes() && !has_prefix) {
                    continue;
                }
                let drop = DeleteFieldIndexCollectionBuilder::new(&self.collection, name).wait(true);
                self.run(&format!("rebuilding the index of {name}"), client.delete_field_index(drop))?;
            }
            let mut request = CreateFieldIndexCollectionBuilder::new(&self.collection, name, kind).wait(true);
            if let Some(params) = params {
                request = request.field_index_params(params);
            }
            self.run(&format!("indexing the payload field {name}"), client.create_field_index(request))?;
        }
        Ok(())
    }

    fn layout_error(&self, problem: &str) -> VectorError {
        VectorError::new(
            format!("opening {} at {}", self.collection, self.url),
            format!("the collection {problem}: run `engram reindex` (it deletes and rebuilds the collection)"),
        )
    }

    fn check_dimension(&self, what: &str, len: usize) -> Result<(), VectorError> {
        if len == self.dimension {
            return Ok(());
        }
        Err(VectorError::new(what, format!("a {len}-dimensional vector in a {}-dimensional store", self.dimension)))
    }
}

impl Drop for QdrantIndex {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A client error in a sentence (without the gRPC metadata), naming the
/// API key when the server refused it.
fn describe(err: &QdrantError) -> String {
    match err {
        QdrantError::ResponseError { status } | QdrantError::ResourceExhaustedError { status, .. } => {
            match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    format!("the server refused the API key (retrieval.qdrant.api_key_file): {}", status.message())
                }
                code => format!("{code:?}: {}", status.message()),
            }
        }
        other => other.to_string(),
    }
}

/// `major.minor` of a version string such as `1.19.2` or `v1.20.0-dev`.
fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

/// Writes go through a shard's leader, so on a replicated collection a
/// delete and a later upsert of the same id apply in that order everywhere
/// (no cost on a single node).
fn ordering() -> WriteOrdering {
    WriteOrdering { r#type: WriteOrderingType::Medium as i32 }
}

/// The server filter for `filter`; it always leaves out the watermark point.
fn server_filter(filter: &Filter) -> QdrantFilter {
    let must = filter
        .must
        .iter()
        .map(|condition| match condition {
            Condition::Is { field, value } => Condition_::matches(*field, value.clone()),
            Condition::Prefix { field, prefix } => Condition_::matches_prefix(*field, prefix.clone()),
            Condition::Range { field, range } => {
                let range = Range { gte: Some(range.start as f64), lt: Some(range.end as f64), ..Range::default() };
                Condition_::range(*field, range)
            }
        })
        .collect();
    QdrantFilter { must, must_not: vec![Condition_::has_id([META_ID])], ..QdrantFilter::default() }
}

impl VectorIndex for QdrantIndex {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn upsert(&self, points: &[Point]) -> Result<(), VectorError> {
        if let Some(bad) = points.iter().find(|p| p.vector.len() != self.dimension) {
            self.check_dimension(&format!("upserting point {}", bad.id), bad.vector.len())?;
        }
        check_points(&self.schema, points)?;
        for batch in points.chunks(UPSERT_BATCH) {
            let structs: Vec<PointStruct> = batch
                .iter()
                .map(|p| {
                    PointStruct::new(p.id, p.vector.clone(), qdrant_client::Payload::from(p.payload(&self.schema)))
                })
                .collect();
            let request = UpsertPointsBuilder::new(&self.collection, structs).wait(true).ordering(ordering());
            self.run(&format!("upserting {} points", batch.len()), self.client.upsert_points(request))?;
        }
        Ok(())
    }

    fn delete(&self, ids: &[u64]) -> Result<(), VectorError> {
        for batch in ids.chunks(UPSERT_BATCH * 16) {
            let request = DeletePointsBuilder::new(&self.collection)
                .points(PointsIdsList::from(batch.to_vec()))
                .wait(true)
                .ordering(ordering());
            self.run(&format!("deleting {} points", batch.len()), self.client.delete_points(request))?;
        }
        Ok(())
    }

    fn commit(&self, applied_seq: u64) -> Result<(), VectorError> {
        // Upserts and deletes above waited for the server to apply them, so
        // the watermark never runs ahead of the points.
        let mut marker = vec![0.0; self.dimension];
        if let Some(first) = marker.first_mut() {
            *first = 1.0;
        }
        let payload = qdrant_client::Payload::from(HashMap::from([(APPLIED_KEY.to_owned(), json!(applied_seq))]));
        let request = UpsertPointsBuilder::new(&self.collection, vec![PointStruct::new(META_ID, marker, payload)])
            .wait(true)
            .ordering(ordering());
        self.run("recording the journal watermark", self.client.upsert_points(request))?;
        Ok(())
    }

    fn applied_seq(&self) -> Result<u64, VectorError> {
        let request = GetPointsBuilder::new(&self.collection, vec![META_ID.into()]).with_payload(true);
        let response = self.run("reading the journal watermark", self.client.get_points(request))?;
        let Some(point) = response.result.into_iter().next() else {
            return Ok(0);
        };
        match point.payload.get(APPLIED_KEY).and_then(|v| v.kind.as_ref()) {
            Some(Kind::IntegerValue(seq)) => u64::try_from(*seq)
                .map_err(|_| VectorError::new("reading the journal watermark", format!("{seq} is negative"))),
            Some(Kind::DoubleValue(seq)) if *seq >= 0.0 && seq.fract() == 0.0 => Ok(*seq as u64),
            other => Err(VectorError::new("reading the journal watermark", format!("unexpected value {other:?}"))),
        }
    }

    fn len(&self) -> Result<u64, VectorError> {
        let request = CountPointsBuilder::new(&self.collection).filter(server_filter(&Filter::all())).exact(true);
        let response = self.run("counting points", self.client.count(request))?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    fn engine(&self) -> &'static str {
        "qdrant"
    }

    fn search(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError> {
        self.nearest(vector, filter, k, false)
    }

    fn search_exact(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, VectorError> {
        self.nearest(vector, filter, k, true)
    }
}

impl QdrantIndex {
    /// The `k` nearest points: through HNSW, or `exact`ly.
    fn nearest(&self, vector: &[f32], filter: &Filter, k: usize, exact: bool) -> Result<Vec<(u64, f32)>, VectorError> {
        self.check_dimension("searching", vector.len())?;
        self.schema.check_filter(filter).map_err(|e| VectorError::new("searching", e))?;
        let prefix = filter.must.iter().any(|c| matches!(c, Condition::Prefix { .. }));
        if prefix && !self.filters_prefixes() {
            return Err(VectorError::new(
                format!("searching {} at {}", self.collection, self.url),
                format!(
                    "prefix filters need Qdrant {}.{} or newer; the server runs {}.{}",
                    PREFIX_SERVER.0, PREFIX_SERVER.1, self.server.0, self.server.1
                ),
            ));
        }
        let request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(vector.to_vec()))
            .filter(server_filter(filter))
            .limit(k.max(1) as u64)
            .params(SearchParamsBuilder::default().exact(exact))
            .with_payload(false);
        let response = self.run("searching", self.client.query(request))?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|hit| match hit.id.and_then(|id| id.point_id_options) {
                Some(PointIdOptions::Num(id)) => Some((id, hit.score)),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::sample::SCHEMA;
    use crate::vector::check_backend;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("1.19.0"), Some((1, 19)));
        assert_eq!(parse_version("v1.20.1-dev"), Some((1, 20)));
        assert_eq!(parse_version("1.9"), Some((1, 9)));
        assert!(parse_version("1.9.0").is_some_and(|v| v < MIN_SERVER));
        assert!(parse_version("1.12.2").is_some_and(|v| v < MIN_SERVER));
        assert!(parse_version("1.18.1").is_some_and(|v| v >= MIN_SERVER && v < PREFIX_SERVER));
        assert_eq!(parse_version("dev"), None);
    }

    #[test]
    fn collection_names_are_sanitized_and_keys_are_not_printed() {
        let options = QdrantOptions {
            url: "http://127.0.0.1:6334".into(),
            api_key: Some("s3cret".into()),
            collection_prefix: "engram".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(options.collection("chunks", "all-MiniLM-L6-v2"), "engram-chunks-all-MiniLM-L6-v2");
        assert_eq!(options.collection("turns", "bge small.en/v1"), "engram-turns-bge_small_en_v1");
        assert_eq!(options.legacy_collection("bge small.en/v1"), "engram-bge_small_en_v1");
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn filters_carry_every_condition_and_exclude_the_watermark() {
        let empty = server_filter(&Filter::all());
        assert!(empty.must.is_empty());
        assert_eq!(empty.must_not, vec![Condition_::has_id([META_ID])]);
        let full = server_filter(
            &Filter::all()
                .is("collection", "docs")
                .is("tenant", "acme")
                .prefix("path", "/a/")
                .is("tags", "guide")
                .is("tags", "cli")
                .range("time", 100..200),
        );
        assert_eq!(full.must.len(), 6);
        assert!(full.must.contains(&Condition_::matches_prefix("path", "/a/".to_owned())));
        let range = Range { gte: Some(100.0), lt: Some(200.0), ..Range::default() };
        assert!(full.must.contains(&Condition_::range("time", range)));
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        let options = QdrantOptions {
            url: "http://127.0.0.1:9".into(),
            api_key: None,
            collection_prefix: "engram".into(),
            timeout: Duration::from_millis(500),
        };
        let err = QdrantIndex::open(&options, "engram-test", SCHEMA, 3).err().expect("refused").to_string();
        assert!(err.contains("reaching the server") && err.contains("127.0.0.1:9"), "{err}");
        // A key that cannot be sent is refused without being printed.
        let options = QdrantOptions { api_key: Some("s3cret key".into()), ..options };
        let err = QdrantIndex::probe(&options).expect_err("refused").to_string();
        assert!(err.contains("API key") && !err.contains("s3cret"), "{err}");
    }

    /// The server at `ENGRAM_TEST_QDRANT_URL`, or `None` (skipped).
    fn server(test: &str) -> Option<QdrantOptions> {
        let Ok(url) = std::env::var("ENGRAM_TEST_QDRANT_URL") else {
            eprintln!("skipped: {test} needs a Qdrant 1.13+ server at ENGRAM_TEST_QDRANT_URL");
            return None;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.subsec_nanos();
        Some(QdrantOptions {
            url,
            api_key: std::env::var("ENGRAM_TEST_QDRANT_API_KEY").ok(),
            collection_prefix: format!("engram-unit-{}-{nanos}", std::process::id()),
            timeout: Duration::from_secs(30),
        })
    }

    #[test]
    fn a_server_collection_keeps_points_filters_and_its_watermark() {
        let Some(options) = server("a_server_collection_keeps_points_filters_and_its_watermark") else {
            return;
        };
        let name = options.collection("unit", "test");
        struct Cleanup<'a>(&'a QdrantOptions, &'a str);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = QdrantIndex::drop_collection(self.0, self.1);
            }
        }
        let _cleanup = Cleanup(&options, &name);

        let index = QdrantIndex::open(&options, &name, SCHEMA, 3).unwrap();
        assert!(index.filters_prefixes(), "the test server is 1.19");
        // The watermark point is neither counted nor found (`check_backend`
        // counts and searches everything).
        check_backend(Box::new(index), &|index| {
            drop(index);
            Box::new(QdrantIndex::open(&options, &name, SCHEMA, 3).unwrap())
        });

        let err = QdrantIndex::open(&options, &name, SCHEMA, 384).err().expect("refused").to_string();
        assert!(err.contains("3-dimensional") && err.contains("reindex"), "{err}");
        QdrantIndex::drop_collection(&options, &name).unwrap();
        let index = QdrantIndex::open(&options, &name, SCHEMA, 384).unwrap();
        assert_eq!((index.len().unwrap(), index.applied_seq().unwrap()), (0, 0));
    }
}
