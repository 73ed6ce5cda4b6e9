//! BEIR-layout evaluation data: `corpus.jsonl` (`_id`, `title`, `text`),
//! `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`,
//! `corpus-id`, `score`, with a header line).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use engram_index::metrics::Judgments;

/// Why a BEIR folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BeirError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not what the layout says.
    #[error("{}:{line}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One corpus document.
#[derive(Debug, Clone, Deserialize)]
pub struct Document {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Its title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Its text.
    pub text: String,
}

/// One query.
#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Its text.
    pub text: String,
}

/// A BEIR data set: the corpus, the judged queries and their judgments.
#[derive(Debug, Clone)]
pub struct Beir {
    /// Every document.
    pub corpus: Vec<Document>,
    /// The queries that have judgments in the split, in file order.
    pub queries: Vec<Query>,
    /// Judgments by query id.
    pub qrels: HashMap<String, Judgments>,
}

impl Beir {
    /// The judged queries as calibration questions, each document judged
    /// relevant a gold path (documents are ingested under their ids), in
    /// file order; queries with no relevant document are left out.
    pub fn questions(&self) -> Vec<crate::certify::Question> {
        self.queries
            .iter()
            .filter_map(|query| {
                let judged = self.qrels.get(&query.id)?;
                let mut gold_paths: Vec<String> =
                    judged.iter().filter(|(_, grade)| **grade > 0).map(|(doc, _)| doc.clone()).collect();
                gold_paths.sort();
                (!gold_paths.is_empty()).then(|| crate::certify::Question {
                    question: query.text.clone(),
                    gold: Vec::new(),
                    gold_paths,
                })
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<String, BeirError> {
    std::fs::read_to_string(path).map_err(|source| BeirError::Io { path: path.to_path_buf(), source })
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, BeirError> {
    read(path)?
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|err| BeirError::Format {
                path: path.to_path_buf(),
                line: i + 1,
                message: err.to_string(),
            })
        })
        .collect()
}

impl Beir {
    /// Loads `dir` with the judgments of `split` (e.g. `test`, `train`; if
    /// `qrels/` holds one file, that one).
    pub fn load(dir: &Path, split: Option<&str>) -> Result<Self, BeirError> {
        let corpus: Vec<Document> = jsonl(&dir.join("corpus.jsonl"))?;
        let all_queries: Vec<Query> = jsonl(&dir.join("queries.jsonl"))?;
        let qrels_dir = dir.join("qrels");
        let qrels_path = match split {
            Some(split) => qrels_dir.join(format!("{split}.tsv")),
            None => {
                let entries = std::fs::read_dir(&qrels_dir)
                    .map_err(|source| BeirError::Io { path: qrels_dir.clone(), source })?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
                    .collect();
                files.sort();
                // Prefer `test`, as BEIR reports it.
                match files.iter().find(|p| p.file_stem().is_some_and(|s| s == "test")) {
                    Some(test) => test.clone(),
                    None => files.into_iter().next().ok_or_else(|| BeirError::Format {
                        path: qrels_dir.clone(),
                        line: 0,
                        message: "no .tsv judgments".to_owned(),
                    })?,
                }
            }
        };
        let mut qrels: HashMap<String, Judgments> = HashMap::new();
        for (i, line) in read(&qrels_path)?.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if i == 0 && fields.first().is_some_and(|f| f.starts_with("query")) || line.trim().is_empty() {
                continue;
            }
            let [query, doc, score] = fields[..] else {
                return Err(BeirError::Format {
                    path: qrels_path.clone(),
                    line: i + 1,
                    message: "expected query-id, corpus-id and score separated by tabs".to_owned(),
                });
            };
            let score: u32 = score.parse().map_err(|_| BeirError::Format {
                path: qrels_path.clone(),
                line: i + 1,
                message: format!("score `{score}` is not a whole number"),
            })?;
            qrels.entry(query.to_owned()).or_default().insert(doc.to_owned(), score);
        }
        let queries = all_queries.into_iter().filter(|q| qrels.contains_key(&q.id)).collect();
        Ok(Self { corpus, queries, qrels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_folder_loads_and_bad_lines_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"x\"}\n{\"_id\": \"d2\", \"text\": \"y\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"a\"}\n{\"_id\": \"q2\", \"text\": \"b\"}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(dir.path().join("qrels/train.tsv"), "query-id\tcorpus-id\tscore\nq1\td2\t1\n").unwrap();
        let beir = Beir::load(dir.path(), None).unwrap();
        assert_eq!((beir.corpus.len(), beir.queries.len()), (2, 1));
        assert_eq!(beir.qrels["q1"]["d2"], 1);
        std::fs::write(dir.path().join("qrels/train.tsv"), "query-id\tcorpus-id\tscore\nq1 d2\n").unwrap();
        let err = Beir::load(dir.path(), Some("train")).unwrap_err().to_string();
        assert!(err.contains("train.tsv:2"), "{err}");
    }
}
