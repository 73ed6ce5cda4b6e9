//! The BM25 index: tantivy over chunk text, with the filter fields every
//! search takes (collection, tenant, path prefix, tags, time range).
//!
//! It is derived from the journal: each commit records the last journal
//! sequence applied (the commit payload), so after a crash the index
//! catches up from there. Text is analyzed the way Lucene's English
//! analyzer does it: words, lowercased, English stop words dropped, Porter
//! stemmed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use crate::Filter;

/// The analyzer's registered name.
const ANALYZER: &str = "engram_en";
/// Memory for the single indexing thread.
const WRITER_HEAP: usize = 64 << 20;

/// A BM25 failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("BM25 index: {context}: {source}")]
pub struct Bm25Error {
    context: String,
    #[source]
    source: tantivy::TantivyError,
}

fn ctx(context: impl Into<String>) -> impl FnOnce(tantivy::TantivyError) -> Bm25Error {
    let context = context.into();
    move |source| Bm25Error { context, source }
}

/// A chunk as the index sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedChunk {
    /// The chunk's id in the journal.
    pub id: u64,
    /// Its collection.
    pub collection: String,
    /// Its tenant, if any.
    pub tenant: Option<String>,
    /// Its document's path.
    pub path: String,
    /// Tags of its document.
    pub tags: Vec<String>,
    /// When its document was ingested (Unix seconds).
    pub time: i64,
    /// Headings and text, as searched.
    pub text: String,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    collection: Field,
    tenant: Field,
    path: Field,
    tags: Field,
    time: Field,
    text: Field,
}

/// The BM25 index of chunks.
pub struct Bm25 {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    parser: QueryParser,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        id: builder.add_u64_field("id", INDEXED | STORED | FAST),
        collection: builder.add_text_field("collection", STRING),
        tenant: builder.add_text_field("tenant", STRING),
        path: builder.add_text_field("path", STRING),
        tags: builder.add_text_field("tags", STRING),
        time: builder.add_i64_field("time", INDEXED | FAST),
        text: builder.add_text_field("text", text),
    };
    (builder.build(), fields)
}

/// Lucene's English analysis, in tantivy's parts.
pub fn english_analyzer() -> TextAnalyzer {
    let builder =
        TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(40)).filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder.filter(stop).filter(Stemmer::new(Language::English)).build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

impl Bm25 {
    /// Opens the index in `dir`, creating it if the directory is empty.
    pub fn open(dir: &Path) -> Result<Self, Bm25Error> {
        std::fs::create_dir_all(dir)
            .map_err(|err| ctx(format!("creating {}", dir.display()))(tantivy::TantivyError::from(err)))?;
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|err| ctx(format!("opening {}", dir.display()))(err.into()))?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(directory, schema).map_err(ctx(format!("opening {}", dir.display())))?;
        Self::with_index(index, fields)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory() -> Result<Self, Bm25Error> {
        let (schema, fields) = schema();
        Self::with_index(Index::create_in_ram(schema), fields)
    }

    fn with_index(index: Index, fields: Fields) -> Result<Self, Bm25Error> {
        index.tokenizers().register(ANALYZER, english_analyzer());
        // One indexing thread: the daemon shares two cores with the models.
        let writer = index.writer_with_num_threads(1, WRITER_HEAP).map_err(ctx("starting the writer"))?;
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(ctx("opening a reader"))?;
        // Words are OR-ed (the parser's default): BM25 ranks partial matches.
        let parser = QueryParser::for_index(&index, vec![fields.text]);
        Ok(Self { index, reader, writer: Mutex::new(writer), fields, parser })
    }

    /// Adds or replaces chunks (by id). Visible after [`Bm25::commit`].
    pub fn upsert(&self, chunks: &[IndexedChunk]) -> Result<(), Bm25Error> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let f = self.fields;
        for chunk in chunks {
            writer.delete_term(Term::from_field_u64(f.id, chunk.id));
            let mut doc = TantivyDocument::default();
            doc.add_u64(f.id, chunk.id);
            doc.add_text(f.collection, &chunk.collection);
            if let Some(tenant) = &chunk.tenant {
                doc.add_text(f.tenant, tenant);
            }
            doc.add_text(f.path, &chunk.path);
            for tag in &chunk.tags {
                doc.add_text(f.tags, tag);
            }
            doc.add_i64(f.time, chunk.time);
            doc.add_text(f.text, &chunk.text);
            writer.add_document(doc).map_err(ctx(format!("adding chunk {}", chunk.id)))?;
        }
        Ok(())
    }

    /// Removes chunks by id. Visible after [`Bm25::commit`].
    pub fn delete(&self, ids: &[u64]) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            writer.delete_term(Term::from_field_u64(self.fields.id, *id));
        }
    }

    /// Makes the changes durable and visible, recording that the journal
    /// is applied up to `applied_seq`.
    pub fn commit(&self, applied_seq: u64) -> Result<(), Bm25Error> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut prepared = writer.prepare_commit().map_err(ctx("preparing a commit"))?;
        prepared.set_payload(&applied_seq.to_string());
        prepared.commit().map_err(ctx("committing"))?;
        drop(writer);
        self.reader.reload().map_err(ctx("reloading the reader"))
    }

    /// The last journal sequence committed (0 for a new index).
    pub fn applied_seq(&self) -> Result<u64, Bm25Error> {
        let metas = self.index.load_metas().map_err(ctx("reading the commit metadata"))?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// Chunks in the index (committed).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` best chunks for `query` within `filter`: (chunk id, BM25
    /// score), best first. Query syntax errors are ignored (words search).
    pub fn search(&self, query: &str, filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, Bm25Error> {
        let (text_query, _errors) = self.parser.parse_query_lenient(query);
        self.top(text_query, filter, k)
    }

    /// Up to `k` chunk ids within `filter`, in no particular order (for
    /// consistency checks).
    pub fn all_ids(&self, filter: &Filter, k: usize) -> Result<Vec<u64>, Bm25Error> {
        let hits = self.top(Box::new(tantivy::query::AllQuery), filter, k)?;
        Ok(hits.into_iter().map(|(id, _)| id).collect())
    }

    fn top(&self, scored: Box<dyn Query>, filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, Bm25Error> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, scored)];
        let f = self.fields;
        // Filters must match but add nothing to the score.
        let filter_by =
            |query: Box<dyn Query>| (Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0)) as Box<dyn Query>);
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        if let Some(collection) = &filter.collection {
            clauses.push(filter_by(term(f.collection, collection)));
        }
        if let Some(tenant) = &filter.tenant {
            clauses.push(filter_by(term(f.tenant, tenant)));
        }
        for tag in &filter.tags {
            clauses.push(filter_by(term(f.tags, tag)));
        }
        if let Some(prefix) = &filter.path_prefix {
            let lower = Term::from_field_text(f.path, prefix);
            let upper = Term::from_field_text(f.path, &format!("{prefix}\u{10FFFF}"));
            clauses.push(filter_by(Box::new(RangeQuery::new(Bound::Included(lower), Bound::Excluded(upper)))));
        }
        if let Some(time) = &filter.time {
            let lower = Term::from_field_i64(f.time, time.start);
            let upper = Term::from_field_i64(f.time, time.end);
            clauses.push(filter_by(Box::new(RangeQuery::new(Bound::Included(lower), Bound::Excluded(upper)))));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k.max(1)).order_by_score()).map_err(ctx("searching"))?;
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address).map_err(ctx("reading a hit"))?;
                let id = doc.get_first(f.id).and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                Ok((id, score))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u64, collection: &str, path: &str, tags: &[&str], time: i64, text: &str) -> IndexedChunk {
        IndexedChunk {
            id,
            collection: collection.into(),
            tenant: id.is_multiple_of(2).then(|| "acme".to_owned()),
            path: path.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            time,
            text: text.into(),
        }
    }

    fn ids(hits: &[(u64, f32)]) -> Vec<u64> {
        hits.iter().map(|(id, _)| *id).collect()
    }

    fn sample() -> Bm25 {
        let index = Bm25::in_memory().unwrap();
        index
            .upsert(&[
                chunk(1, "docs", "/a/install.md", &["guide"], 100, "Installing the daemon on Linux requires systemd."),
                chunk(2, "docs", "/a/usage.md", &["guide", "cli"], 200, "Run the daemon; it installs nothing."),
                chunk(3, "notes", "/b/todo.txt", &[], 300, "Buy milk. The cats are running around."),
                chunk(4, "docs", "/b/cats.md", &["pets"], 400, "A cat runs faster than the dog."),
            ])
            .unwrap();
        index.commit(7).unwrap();
        index
    }

    #[test]
    fn english_analysis_stems_and_drops_stop_words() {
        let index = sample();
        // "installs" / "installing" share a stem; "the" matches nothing by itself.
        let mut install = ids(&index.search("install", &Filter::default(), 10).unwrap());
        install.sort_unstable();
        assert_eq!(install, [1, 2]);
        assert!(index.search("the", &Filter::default(), 10).unwrap().is_empty());
        let cats = index.search("cats running", &Filter::default(), 10).unwrap();
        assert_eq!(cats[0].0, 3, "{cats:?}");
        assert!(ids(&cats).contains(&4));
        // Syntax in a question does not break it.
        assert_eq!(ids(&index.search("daemon: (install OR \"", &Filter::default(), 1).unwrap()), [1]);
        assert_eq!(index.applied_seq().unwrap(), 7);
    }

    #[test]
    fn filters_restrict_by_collection_tenant_path_tags_and_time() {
        let index = sample();
        let all = |filter: Filter| ids(&index.search("daemon cat install run", &filter, 10).unwrap());
        let mut got = all(Filter { collection: Some("docs".into()), ..Filter::default() });
        got.sort_unstable();
        assert_eq!(got, [1, 2, 4]);
        let mut got = all(Filter { tenant: Some("acme".into()), ..Filter::default() });
        got.sort_unstable();
        assert_eq!(got, [2, 4]);
        let mut got = all(Filter { path_prefix: Some("/b/".into()), ..Filter::default() });
        got.sort_unstable();
        assert_eq!(got, [3, 4]);
        assert_eq!(all(Filter { tags: vec!["guide".into(), "cli".into()], ..Filter::default() }), [2]);
        let mut got = all(Filter { time: Some(150..400), ..Filter::default() });
        got.sort_unstable();
        assert_eq!(got, [2, 3]);
    }

    #[test]
    fn upserts_replace_deletes_remove_and_commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Bm25::open(dir.path()).unwrap();
            assert_eq!((index.applied_seq().unwrap(), index.len()), (0, 0));
            index.upsert(&[chunk(1, "c", "/x", &[], 0, "alpha beta"), chunk(2, "c", "/y", &[], 0, "gamma")]).unwrap();
            index.commit(3).unwrap();
            index.upsert(&[chunk(1, "c", "/x", &[], 0, "delta")]).unwrap();
            index.delete(&[2]);
            // Uncommitted: a crash here loses these, and the journal replays them.
        }
        let index = Bm25::open(dir.path()).unwrap();
        assert_eq!((index.applied_seq().unwrap(), index.len()), (3, 2));
        index.upsert(&[chunk(1, "c", "/x", &[], 0, "delta")]).unwrap();
        index.delete(&[2]);
        index.commit(5).unwrap();
        assert_eq!(index.len(), 1);
        assert!(index.search("alpha", &Filter::default(), 10).unwrap().is_empty());
        assert_eq!(ids(&index.search("delta", &Filter::default(), 10).unwrap()), [1]);
        assert_eq!(index.applied_seq().unwrap(), 5);
    }
}
