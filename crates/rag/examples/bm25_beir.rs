//! BM25 alone on a BEIR folder, one entry per document (title + text):
//! `cargo run --release -p engram-rag --example bm25_beir -- DIR [SPLIT]`.

use engram_index::metrics::{ndcg_at, recall_at, reciprocal_rank};
use engram_index::{Bm25, Document, Filter, Schema};
use engram_rag::beir::Beir;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: bm25_beir DIR [SPLIT]")?;
    let beir = Beir::load(std::path::Path::new(dir), args.get(2).map(String::as_str))?;
    let index = Bm25::in_memory(Schema { fields: &[] })?;
    let started = std::time::Instant::now();
    let chunks: Vec<Document> = beir
        .corpus
        .iter()
        .enumerate()
        .map(|(i, d)| Document::new(i as u64, format!("{}\n{}", d.title, d.text)))
        .collect();
    index.upsert(&chunks)?;
    index.commit(1)?;
    let indexed = started.elapsed();
    let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
    let started = std::time::Instant::now();
    for query in &beir.queries {
        let hits = index.search(&query.text, &Filter::all(), 100)?;
        let ranked: Vec<&str> = hits.iter().map(|(id, _)| beir.corpus[*id as usize].id.as_str()).collect();
        let judged = &beir.qrels[&query.id];
        ndcg += ndcg_at(&ranked, judged, 10);
        recall += recall_at(&ranked, judged, 100);
        mrr += reciprocal_rank(&ranked, judged);
    }
    let n = beir.queries.len() as f64;
    println!(
        "{} docs indexed in {:.2?}; {} queries in {:.2?}: nDCG@10 {:.4}  recall@100 {:.4}  MRR {:.4}",
        beir.corpus.len(),
        indexed,
        beir.queries.len(),
        started.elapsed(),
        ndcg / n,
        recall / n,
        mrr / n
    );
    Ok(())
}
