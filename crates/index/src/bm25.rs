//! The BM25 index: tantivy over each document's text, with the filter
//! fields its [`Schema`] declares (exact keywords, keyword prefixes,
//! integer ranges).
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
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, QueryParser,
    RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema as TantivySchema, TextFieldIndexing, TextOptions,
    Value as _,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{BitSet, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::IndexError;
use crate::document::{Condition, Document, FieldKind, Filter, Schema, Value};

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

/// The BM25 index of one kind of document.
pub struct Bm25 {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    schema: Schema,
    id: Field,
    text: Field,
    /// The tantivy field of each declared field, in the schema's order.
    fields: Vec<Field>,
    parser: QueryParser,
}

/// The tantivy layout of `schema`: the id, each declared field in order,
/// then the text.
fn layout(schema: &Schema) -> (TantivySchema, Field, Vec<Field>, Field) {
    let mut builder = TantivySchema::builder();
    let id = builder.add_u64_field("id", INDEXED | STORED | FAST);
    let fields = schema
        .fields
        .iter()
        .map(|field| match field.kind {
            FieldKind::Keyword => builder.add_text_field(field.name, STRING),
            FieldKind::Integer => builder.add_i64_field(field.name, INDEXED | FAST),
        })
        .collect();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
    );
    let text = builder.add_text_field("text", text);
    (builder.build(), id, fields, text)
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
    pub fn open(dir: &Path, schema: Schema) -> Result<Self, IndexError> {
        // Before tantivy sees it: its schema builder panics on a repeated name.
        schema.check()?;
        std::fs::create_dir_all(dir)
            .map_err(|err| ctx(format!("creating {}", dir.display()))(tantivy::TantivyError::from(err)))?;
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|err| ctx(format!("opening {}", dir.display()))(err.into()))?;
        let opening = || ctx(format!("opening {}", dir.display()));
        let index = if Index::exists(&directory).map_err(|err| opening()(err.into()))? {
            Index::open(directory).map_err(opening())?
        } else {
            Index::create(directory, layout(&schema).0, tantivy::IndexSettings::default()).map_err(opening())?
        };
        Self::with_index(index, schema)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory(schema: Schema) -> Result<Self, IndexError> {
        schema.check()?;
        Self::with_index(Index::create_in_ram(layout(&schema).0), schema)
    }

    /// `schema` is checked by the callers, before tantivy sees it.
    fn with_index(index: Index, schema: Schema) -> Result<Self, IndexError> {
        // An index made for another schema is refused by name and type.
        let stored = index.schema();
        let (wanted, ..) = layout(&schema);
        let mismatch = wanted.fields().any(|(_, entry)| {
            stored.get_field(entry.name()).ok().map(|f| stored.get_field_entry(f).field_type())
                != Some(entry.field_type())
        });
        if mismatch {
            return Err(IndexError::Schema(
                "the BM25 index was made for other fields: run `engram reindex`".to_owned(),
            ));
        }
        let field = |name: &str| stored.get_field(name).map_err(|e| ctx(format!("finding the field {name}"))(e));
        let id = field("id")?;
        let text = field("text")?;
        let fields = schema.fields.iter().map(|f| field(f.name)).collect::<Result<Vec<_>, _>>()?;
        index.tokenizers().register(ANALYZER, english_analyzer());
        // One indexing thread: the daemon shares two cores with the models.
        let writer = index.writer_with_num_threads(1, WRITER_HEAP).map_err(ctx("starting the writer"))?;
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(ctx("opening a reader"))?;
        // Words are OR-ed (the parser's default): BM25 ranks partial matches.
        let parser = QueryParser::for_index(&index, vec![text]);
        Ok(Self { index, reader, writer: Mutex::new(writer), schema, id, text, fields, parser })
    }

    /// The fields it was opened with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The tantivy field of the declared field `name`.
    fn tantivy_field(&self, name: &str) -> Result<Field, IndexError> {
        let position = self.schema.fields.iter().position(|f| f.name == name);
        position
            .map(|i| self.fields[i])
            .ok_or_else(|| IndexError::Schema(format!("the BM25 index has no field {name:?}")))
    }

    /// Adds or replaces documents (by id). Visible after [`Bm25::commit`].
    pub fn upsert(&self, documents: &[Document]) -> Result<(), IndexError> {
        for document in documents {
            self.schema.check_document(document)?;
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for document in documents {
            writer.delete_term(Term::from_field_u64(self.id, document.id));
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.id, document.id);
            for (name, value) in &document.fields {
                let field = self.tantivy_field(name)?;
                match value {
                    Value::Keyword(text) => doc.add_text(field, text),
                    Value::Integer(number) => doc.add_i64(field, *number),
                }
            }
            doc.add_text(self.text, &document.text);
            writer.add_document(doc).map_err(ctx(format!("adding document {}", document.id)))?;
        }
        Ok(())
    }

    /// Removes chunks by id. Visible after [`Bm25::commit`].
    pub fn delete(&self, ids: &[u64]) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            writer.delete_term(Term::from_field_u64(self.id, *id));
        }
    }

    /// Makes the changes durable and visible, recording that the journal
    /// is applied up to `applied_seq`.
    pub fn commit(&self, applied_seq: u64) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut prepared = writer.prepare_commit().map_err(ctx("preparing a commit"))?;
        prepared.set_payload(&applied_seq.to_string());
        prepared.commit().map_err(ctx("committing"))?;
        drop(writer);
        self.reader.reload().map_err(ctx("reloading the reader"))?;
        Ok(())
    }

    /// The last journal sequence committed (0 for a new index).
    pub fn applied_seq(&self) -> Result<u64, IndexError> {
        let metas = self.index.load_metas().map_err(ctx("reading the commit metadata"))?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// Documents in the index (committed).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` best documents for `query` within `filter`: (id, BM25
    /// score), best first, with the statistics (document count, average
    /// length, document frequencies) of the whole index, deleted documents
    /// not yet merged away included. Query syntax errors are ignored
    /// (words search).
    pub fn search(&self, query: &str, filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, IndexError> {
        let (text_query, _errors) = self.parser.parse_query_lenient(query);
        self.top(text_query, filter, k, Statistics::Index)
    }

    /// As [`Bm25::search`], but scored with the statistics of the live
    /// documents within `filter` only: a score then depends on nothing
    /// outside the filter (another collection's or tenant's documents, a
    /// segment merge), so it is a fixed function of the filtered documents.
    pub fn search_within(&self, query: &str, filter: &Filter, k: usize) -> Result<Vec<(u64, f32)>, IndexError> {
        let (text_query, _errors) = self.parser.parse_query_lenient(query);
        self.top(text_query, filter, k, Statistics::Within)
    }

    /// Up to `k` document ids within `filter`, in no particular order (for
    /// consistency checks).
    pub fn all_ids(&self, filter: &Filter, k: usize) -> Result<Vec<u64>, IndexError> {
        let hits = self.top(Box::new(AllQuery), filter, k, Statistics::Index)?;
        Ok(hits.into_iter().map(|(id, _)| id).collect())
    }

    /// The conjunction of `filter`'s conditions (`None`: no condition).
    fn filter_query(&self, filter: &Filter) -> Result<Option<Box<dyn Query>>, IndexError> {
        self.schema.check_filter(filter)?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(filter.must.len());
        for condition in &filter.must {
            let field = self.tantivy_field(condition.field())?;
            let query: Box<dyn Query> = match condition {
                Condition::Is { value, .. } => {
                    Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
                }
                Condition::Prefix { prefix, .. } => {
                    let lower = Term::from_field_text(field, prefix);
                    let upper = Term::from_field_text(field, &format!("{prefix}\u{10FFFF}"));
                    Box::new(RangeQuery::new(Bound::Included(lower), Bound::Excluded(upper)))
                }
                Condition::Range { range, .. } => {
                    let lower = Term::from_field_i64(field, range.start);
                    let upper = Term::from_field_i64(field, range.end);
                    Box::new(RangeQuery::new(Bound::Included(lower), Bound::Excluded(upper)))
                }
            };
            clauses.push((Occur::Must, query));
        }
        Ok((!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>))
    }

    fn top(
        &self,
        scored: Box<dyn Query>,
        filter: &Filter,
        k: usize,
        statistics: Statistics,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        let within = self.filter_query(filter)?;
        let searcher = self.reader.searcher();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, scored)];
        if let Some(within) = &within {
            // The filter must match but adds nothing to the score.
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(within.box_clone(), 0.0))));
        }
        let query = BooleanQuery::new(clauses);
        let collector = TopDocs::with_limit(k.max(1)).order_by_score();
        let top = match statistics {
            Statistics::Index => searcher.search(&query, &collector),
            Statistics::Within => {
                let all: Box<dyn Query> = Box::new(AllQuery);
                let stats = WithinStats::new(&searcher, within.as_ref().unwrap_or(&all).as_ref(), self.text)
                    .map_err(ctx("counting the filtered documents"))?;
                searcher.search_with_statistics_provider(&query, &collector, &stats)
            }
        }
        .map_err(ctx("searching"))?;
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address).map_err(ctx("reading a hit"))?;
                let id = doc.get_first(self.id).and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                Ok((id, score))
            })
            .collect()
    }
}

/// Whose statistics BM25 scores with.
#[derive(Debug, Clone, Copy)]
enum Statistics {
    /// The whole index's (tantivy's default).
    Index,
    /// Those of the live documents within the search's filter.
    Within,
}

/// BM25 statistics of the live documents a filter matches: their count,
/// their text's total length (from the field norms tantivy scores with)
/// and, per term, how many of them contain it.
struct WithinStats<'a> {
    searcher: &'a Searcher,
    /// Per segment, the live documents within the filter.
    within: Vec<BitSet>,
    documents: u64,
    text: Field,
    text_tokens: u64,
}

impl<'a> WithinStats<'a> {
    fn new(searcher: &'a Searcher, filter: &dyn Query, text: Field) -> tantivy::Result<Self> {
        let weight = filter.weight(EnableScoring::disabled_from_searcher(searcher))?;
        let (mut within, mut documents, mut text_tokens) = (Vec::new(), 0u64, 0u64);
        for segment in searcher.segment_readers() {
            let mut docs = BitSet::with_max_value(segment.max_doc());
            let norms = segment.get_fieldnorms_reader(text)?;
            weight.for_each_no_score(segment, &mut |matched| {
                for &doc in matched {
                    if !segment.is_deleted(doc) {
                        docs.insert(doc);
                        documents += 1;
                        text_tokens += u64::from(norms.fieldnorm(doc));
                    }
                }
            })?;
            within.push(docs);
        }
        Ok(Self { searcher, within, documents, text, text_tokens })
    }
}

impl Bm25StatisticsProvider for WithinStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        // Only the text is scored; a filter's own terms score nothing.
        if field == self.text { Ok(self.text_tokens) } else { self.searcher.total_num_tokens(field) }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        // At least one, so an empty filter's average length is not 0/0.
        Ok(self.documents.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut count = 0u64;
        for (segment, within) in self.searcher.segment_readers().iter().zip(&self.within) {
            let index = segment.inverted_index(term.field())?;
            let Some(mut postings) = index.read_postings(term, IndexRecordOption::Basic)? else { continue };
            let mut doc = postings.doc();
            while doc != tantivy::TERMINATED {
                count += u64::from(within.contains(doc));
                doc = postings.advance();
            }
        }
        // Never above the document count (tantivy asserts it).
        Ok(count.min(self.documents.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::sample::{self, SCHEMA, doc};

    fn ids(hits: &[(u64, f32)]) -> Vec<u64> {
        hits.iter().map(|(id, _)| *id).collect()
    }

    fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
        ids.sort_unstable();
        ids
    }

    fn sample() -> Bm25 {
        let index = Bm25::in_memory(SCHEMA).unwrap();
        index.upsert(&sample::documents()).unwrap();
        index.commit(7).unwrap();
        index
    }

    #[test]
    fn english_analysis_stems_and_drops_stop_words() {
        let index = sample();
        // "installs" / "installing" share a stem; "the" matches nothing by itself.
        assert_eq!(sorted(ids(&index.search("install", &Filter::all(), 10).unwrap())), [1, 2]);
        assert!(index.search("the", &Filter::all(), 10).unwrap().is_empty());
        let cats = index.search("cats running", &Filter::all(), 10).unwrap();
        assert_eq!(cats[0].0, 3, "{cats:?}");
        assert!(ids(&cats).contains(&4));
        // Syntax in a question does not break it.
        assert_eq!(ids(&index.search("daemon: (install OR \"", &Filter::all(), 1).unwrap()), [1]);
        assert_eq!(index.applied_seq().unwrap(), 7);
    }

    #[test]
    fn filters_restrict_by_keyword_prefix_every_tag_and_range() {
        let index = sample();
        for (filter, expected) in sample::filters() {
            let got = sorted(ids(&index.search("daemon cat install run milk", &filter, 10).unwrap()));
            assert_eq!(got, expected, "{filter:?}");
            assert_eq!(sorted(index.all_ids(&filter, 10).unwrap()), expected, "{filter:?}");
        }
        let err = index.search("cat", &Filter::all().is("colour", "red"), 10).unwrap_err().to_string();
        assert!(err.contains("undeclared"), "{err}");
    }

    #[test]
    fn scores_within_a_filter_depend_only_on_its_documents() {
        let index = Bm25::in_memory(SCHEMA).unwrap();
        index
            .upsert(&[doc(1, "a", "/x", &[], 0, "tea and bread"), doc(3, "a", "/y", &[], 0, "bread and butter")])
            .unwrap();
        index.commit(1).unwrap();
        let a = Filter::all().is("collection", "a");
        let within = index.search_within("bread tea", &a, 10).unwrap();
        let global = index.search("bread tea", &a, 10).unwrap();
        // With one collection and nothing deleted the two agree.
        assert_eq!(ids(&within), ids(&global));
        // Another collection's documents, and one of its own added and deleted.
        index
            .upsert(&[
                doc(5, "b", "/z", &[], 0, "tea tea tea"),
                doc(7, "b", "/w", &[], 0, "coffee and tea"),
                doc(9, "a", "/v", &[], 0, "tea"),
            ])
            .unwrap();
        index.commit(2).unwrap();
        index.delete(&[9]);
        index.commit(3).unwrap();
        assert_eq!(index.search_within("bread tea", &a, 10).unwrap(), within);
        // The index-wide statistics moved: the same documents score otherwise.
        assert_ne!(index.search("bread tea", &a, 10).unwrap(), global);
        // A filter with nothing in it finds nothing, without failing.
        assert!(index.search_within("tea", &Filter::all().is("collection", "none"), 10).unwrap().is_empty());
        // The tenant, a prefix and no filter at all work the same way.
        let acme = Filter::all().is("tenant", "acme");
        assert!(index.search_within("tea", &acme, 10).unwrap().is_empty(), "odd ids are nobody's");
        let unfiltered = index.search_within("tea", &Filter::all(), 10).unwrap();
        assert_eq!(sorted(ids(&unfiltered)), [1, 5, 7]);
    }

    #[test]
    fn upserts_replace_deletes_remove_and_commits_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Bm25::open(dir.path(), SCHEMA).unwrap();
            assert_eq!((index.applied_seq().unwrap(), index.len()), (0, 0));
            index.upsert(&[doc(1, "c", "/x", &[], 0, "alpha beta"), doc(2, "c", "/y", &[], 0, "gamma")]).unwrap();
            index.commit(3).unwrap();
            index.upsert(&[doc(1, "c", "/x", &[], 0, "delta")]).unwrap();
            index.delete(&[2]);
            // Uncommitted: a crash here loses these, and the journal replays them.
        }
        let index = Bm25::open(dir.path(), SCHEMA).unwrap();
        assert_eq!((index.applied_seq().unwrap(), index.len()), (3, 2));
        index.upsert(&[doc(1, "c", "/x", &[], 0, "delta")]).unwrap();
        index.delete(&[2]);
        index.commit(5).unwrap();
        assert_eq!(index.len(), 1);
        assert!(index.search("alpha", &Filter::all(), 10).unwrap().is_empty());
        assert_eq!(ids(&index.search("delta", &Filter::all(), 10).unwrap()), [1]);
        assert_eq!(index.applied_seq().unwrap(), 5);
        drop(index);
        // Another document kind cannot open this directory.
        const OTHER: Schema = Schema { fields: &[crate::Field::keyword("conversation")] };
        let other = OTHER;
        let err = Bm25::open(dir.path(), other).err().expect("refused").to_string();
        assert!(err.contains("reindex"), "{err}");
        // A bad schema is an error, not a panic in tantivy's schema builder.
        const TWICE: Schema = Schema { fields: &[crate::Field::keyword("a"), crate::Field::keyword("a")] };
        assert!(Bm25::in_memory(TWICE).is_err());
        assert!(Bm25::open(&dir.path().join("other"), TWICE).is_err());
    }
}
