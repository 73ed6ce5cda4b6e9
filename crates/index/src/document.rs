//! What a feature puts into an index: a [`Schema`] it declares once (the
//! fields searches filter on), the [`Document`]s it derives from its journal
//! rows, and the [`Filter`]s its searches pass.
//!
//! Every index holds, besides the declared fields, a document id (the
//! journal row's id) and one text (searched by BM25, embedded for the
//! vector index).

use std::ops::Range;

use crate::IndexError;

/// What a field holds and how it can be filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Exact strings (`Condition::Is`; `Condition::Prefix` when declared so).
    Keyword,
    /// A signed integer (`Condition::Range`), e.g. a Unix time.
    Integer,
}

/// One filterable field of a [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name, in every backend.
    pub name: &'static str,
    /// What it holds.
    pub kind: FieldKind,
    /// Whether a document may carry several values (tags).
    pub multi: bool,
    /// Whether searches filter it by prefix (paths); backends index it so.
    pub prefix: bool,
    /// Whether it partitions the data by tenant; backends that can group a
    /// tenant's points together on disk do.
    pub tenant: bool,
}

impl Field {
    /// A single-valued keyword.
    pub const fn keyword(name: &'static str) -> Self {
        Self { name, kind: FieldKind::Keyword, multi: false, prefix: false, tenant: false }
    }

    /// A single-valued integer.
    pub const fn integer(name: &'static str) -> Self {
        Self { name, kind: FieldKind::Integer, multi: false, prefix: false, tenant: false }
    }

    /// This field, holding any number of values.
    pub const fn multi(self) -> Self {
        Self { multi: true, ..self }
    }

    /// This keyword, filterable by prefix.
    pub const fn prefix(self) -> Self {
        Self { prefix: true, ..self }
    }

    /// This keyword, as the tenant partition.
    pub const fn tenant(self) -> Self {
        Self { tenant: true, ..self }
    }
}

/// The fields of one kind of document, declared by the feature that owns
/// it. The reserved names `id` and `text` are the document id and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The filterable fields, in a fixed order (the BM25 index's layout
    /// follows it).
    pub fields: &'static [Field],
}

impl Schema {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Checks that the names are unique and not reserved.
    pub fn check(&self) -> Result<(), IndexError> {
        for (i, field) in self.fields.iter().enumerate() {
            if matches!(field.name, "id" | "text") || field.name.is_empty() {
                return Err(IndexError::Schema(format!("the field name {:?} is reserved", field.name)));
            }
            if self.fields[..i].iter().any(|other| other.name == field.name) {
                return Err(IndexError::Schema(format!("the field {:?} is declared twice", field.name)));
            }
            if field.kind == FieldKind::Integer && (field.prefix || field.tenant) {
                return Err(IndexError::Schema(format!(
                    "the integer field {:?} cannot be a prefix or tenant",
                    field.name
                )));
            }
        }
        Ok(())
    }

    /// Checks that `document` only carries declared fields, with values of
    /// the declared kind and multiplicity.
    pub fn check_document(&self, document: &Document) -> Result<(), IndexError> {
        for (i, (name, value)) in document.fields.iter().enumerate() {
            let field = self.field(name).ok_or_else(|| {
                IndexError::Schema(format!("document {} has the undeclared field {name:?}", document.id))
            })?;
            let kind = match value {
                Value::Keyword(_) => FieldKind::Keyword,
                Value::Integer(_) => FieldKind::Integer,
            };
            if kind != field.kind {
                return Err(IndexError::Schema(format!(
                    "document {}: the field {name:?} holds {:?} values, not {kind:?}",
                    document.id, field.kind
                )));
            }
            if !field.multi && document.fields[..i].iter().any(|(other, _)| other == name) {
                return Err(IndexError::Schema(format!(
                    "document {}: the field {name:?} holds one value, not several",
                    document.id
                )));
            }
        }
        Ok(())
    }

    /// Checks that `filter` only names declared fields, each the way it
    /// was declared.
    pub fn check_filter(&self, filter: &Filter) -> Result<(), IndexError> {
        for condition in &filter.must {
            let name = condition.field();
            let field = self
                .field(name)
                .ok_or_else(|| IndexError::Schema(format!("the filter names the undeclared field {name:?}")))?;
            let fits = match condition {
                Condition::Is { .. } => field.kind == FieldKind::Keyword,
                Condition::Prefix { .. } => field.kind == FieldKind::Keyword && field.prefix,
                Condition::Range { .. } => field.kind == FieldKind::Integer,
            };
            if !fits {
                return Err(IndexError::Schema(format!("the field {name:?} cannot be filtered by {condition:?}")));
            }
        }
        Ok(())
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An exact string.
    Keyword(String),
    /// An integer.
    Integer(i64),
}

/// One document as the indexes see it: its id, its filterable fields and
/// its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The journal row's id.
    pub id: u64,
    /// Field values; a multi-valued field appears once per value.
    pub fields: Vec<(&'static str, Value)>,
    /// What BM25 searches and the embedder embeds.
    pub text: String,
}

impl Document {
    /// A document without fields.
    pub fn new(id: u64, text: impl Into<String>) -> Self {
        Self { id, fields: Vec::new(), text: text.into() }
    }

    /// Adds one keyword value.
    pub fn keyword(mut self, field: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((field, Value::Keyword(value.into())));
        self
    }

    /// Adds each value (none for an empty iterator or `None`).
    pub fn keywords<S: Into<String>>(mut self, field: &'static str, values: impl IntoIterator<Item = S>) -> Self {
        self.fields.extend(values.into_iter().map(|value| (field, Value::Keyword(value.into()))));
        self
    }

    /// Adds an integer value.
    pub fn integer(mut self, field: &'static str, value: i64) -> Self {
        self.fields.push((field, Value::Integer(value)));
        self
    }

    /// The values of `field`, in order.
    pub fn values<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.fields.iter().filter(move |(name, _)| *name == field).map(|(_, value)| value)
    }
}

/// One condition every hit must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The keyword field holds this value (one of its values, if multi).
    Is {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The keyword field (declared `prefix`) starts with this.
    Prefix {
        /// The field.
        field: &'static str,
        /// The prefix.
        prefix: String,
    },
    /// The integer field lies in `start..end`.
    Range {
        /// The field.
        field: &'static str,
        /// The half-open range.
        range: Range<i64>,
    },
}

impl Condition {
    /// The field it tests.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Is { field, .. } | Self::Prefix { field, .. } | Self::Range { field, .. } => field,
        }
    }
}

/// What a search is restricted to: every condition holds (none: everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The conditions, all of which must hold.
    pub must: Vec<Condition>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Also: `field` holds `value`.
    pub fn is(mut self, field: &'static str, value: impl Into<String>) -> Self {
        self.must.push(Condition::Is { field, value: value.into() });
        self
    }

    /// Also: `field` starts with `prefix`.
    pub fn prefix(mut self, field: &'static str, prefix: impl Into<String>) -> Self {
        self.must.push(Condition::Prefix { field, prefix: prefix.into() });
        self
    }

    /// Also: `field` lies in `range`.
    pub fn range(mut self, field: &'static str, range: Range<i64>) -> Self {
        self.must.push(Condition::Range { field, range });
        self
    }

    /// Whether it restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty()
    }
}

/// The fields the engines' own tests use: chunks of documents.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    /// Collection, tenant, path (by prefix), tags, time.
    pub const SCHEMA: Schema = Schema {
        fields: &[
            Field::keyword("collection"),
            Field::keyword("tenant").tenant(),
            Field::keyword("path").prefix(),
            Field::keyword("tags").multi(),
            Field::integer("time"),
        ],
    };

    /// A document of [`SCHEMA`]; even ids belong to tenant "acme".
    pub fn doc(id: u64, collection: &str, path: &str, tags: &[&str], time: i64, text: &str) -> Document {
        Document::new(id, text)
            .keyword("collection", collection)
            .keywords("tenant", id.is_multiple_of(2).then_some("acme"))
            .keyword("path", path)
            .keywords("tags", tags.iter().copied())
            .integer("time", time)
    }

    /// The four documents every backend's tests search and filter.
    pub fn documents() -> Vec<Document> {
        vec![
            doc(1, "docs", "/a/install.md", &["guide"], 100, "Installing the daemon on Linux requires systemd."),
            doc(2, "docs", "/a/usage.md", &["guide", "cli"], 200, "Run the daemon; it installs nothing."),
            doc(3, "notes", "/b/todo.txt", &[], 300, "Buy milk. The cats are running around."),
            doc(4, "docs", "/b/cats.md", &["pets"], 400, "A cat runs faster than the dog."),
        ]
    }

    /// The filters the backends' tests check, with the ids each keeps.
    pub fn filters() -> Vec<(Filter, Vec<u64>)> {
        vec![
            (Filter::all().is("collection", "docs"), vec![1, 2, 4]),
            (Filter::all().is("tenant", "acme"), vec![2, 4]),
            (Filter::all().prefix("path", "/b/"), vec![3, 4]),
            (Filter::all().is("tags", "guide").is("tags", "cli"), vec![2]),
            (Filter::all().range("time", 150..400), vec![2, 3]),
            (Filter::all().is("collection", "docs").range("time", 0..250).is("tenant", "acme"), vec![2]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_refuse_reserved_duplicate_and_misdeclared_fields() {
        sample::SCHEMA.check().unwrap();
        const RESERVED: &[Field] = &[Field::keyword("id")];
        const TWICE: &[Field] = &[Field::keyword("a"), Field::integer("a")];
        const PREFIXED_INTEGER: &[Field] = &[Field::integer("t").prefix()];
        let bad = |fields: &'static [Field]| Schema { fields }.check().unwrap_err().to_string();
        assert!(bad(RESERVED).contains("reserved"));
        assert!(bad(TWICE).contains("twice"));
        assert!(bad(PREFIXED_INTEGER).contains("integer"));
    }

    #[test]
    fn documents_and_filters_must_match_the_schema() {
        let schema = sample::SCHEMA;
        for doc in sample::documents() {
            schema.check_document(&doc).unwrap();
        }
        let err = |doc: Document| schema.check_document(&doc).unwrap_err().to_string();
        assert!(err(Document::new(1, "x").keyword("colour", "red")).contains("undeclared"));
        assert!(err(Document::new(1, "x").keyword("time", "noon")).contains("Integer"));
        assert!(err(Document::new(1, "x").keyword("path", "/a").keyword("path", "/b")).contains("one value"));
        for (filter, _) in sample::filters() {
            schema.check_filter(&filter).unwrap();
        }
        assert!(schema.check_filter(&Filter::all().prefix("collection", "d")).is_err());
        assert!(schema.check_filter(&Filter::all().range("path", 0..1)).is_err());
        assert!(schema.check_filter(&Filter::all().is("colour", "red")).is_err());
    }
}
