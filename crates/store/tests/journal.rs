//! The journal on a real SQLite file.

use std::path::Path;

use engram_store::{Entity, Op, SCHEMA_VERSION, Seq, Store, StoreError, StoreOptions};

fn open(path: &Path) -> Result<Store, StoreError> {
    Store::open(path, &StoreOptions::default())
}

fn record(store: &Store, key: &str) -> Seq {
    store.write(|tx| tx.record(Entity::Turn, key, Op::Upsert)).unwrap()
}

#[test]
fn migrates_an_empty_file_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/journal.sqlite3");
    let store = open(&path).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.schema_version, SCHEMA_VERSION);
    assert_eq!(stats.last_seq, Seq::ZERO);
    assert!(stats.size_bytes > 0);
    drop(store);

    // An empty (zero-byte) file is a new database, not a corrupt one.
    let empty = dir.path().join("empty.sqlite3");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(open(&empty).unwrap().stats().unwrap().schema_version, SCHEMA_VERSION);

    let store = open(&path).unwrap();
    assert_eq!(store.stats().unwrap().schema_version, SCHEMA_VERSION);
}

#[test]
fn sequence_numbers_strictly_increase_across_restarts_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    let mut seen = Vec::new();
    for round in 0..3 {
        let store = open(&path).unwrap();
        for i in 0..5 {
            seen.push(record(&store, &format!("t{round}-{i}")));
        }
        // Compaction must never let a sequence number be reused.
        store
            .write(|tx| {
                tx.sql()
                    .execute("DELETE FROM changes", [])
                    .map_err(|source| StoreError::Sqlite { path: path.clone(), source })
            })
            .unwrap();
        assert_eq!(store.last_seq().unwrap(), *seen.last().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn changes_since_pages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("journal.sqlite3")).unwrap();
    let seqs: Vec<Seq> = (0..10).map(|i| record(&store, &format!("k{i}"))).collect();
    store.write(|tx| tx.record(Entity::Document, "gone", Op::Delete)).unwrap();

    let first = store.changes_since(Seq::ZERO, 4).unwrap();
    assert_eq!(first.iter().map(|c| c.seq).collect::<Vec<_>>(), seqs[..4]);
    let rest = store.changes_since(first[3].seq, 100).unwrap();
    assert_eq!(rest.len(), 7);
    let last = rest.last().unwrap();
    assert_eq!((last.entity, last.key.as_str(), last.op), (Entity::Document, "gone", Op::Delete));
    assert!(store.changes_since(last.seq, 100).unwrap().is_empty());
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("journal.sqlite3")).unwrap();
    let result: Result<(), StoreError> = store.write(|tx| {
        tx.record(Entity::Insight, "i1", Op::Upsert)?;
        tx.sql()
            .execute("INSERT INTO no_such_table VALUES (1)", [])
            .map_err(|source| StoreError::Sqlite { path: "test".into(), source })?;
        Ok(())
    });
    assert!(result.is_err());
    assert!(store.changes_since(Seq::ZERO, 10).unwrap().is_empty());
}

#[test]
fn refuses_a_newer_schema_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    drop(open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
    assert!(err.to_string().contains("upgrade engram"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the refused file was modified");
}

#[test]
fn refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x42; 8192]);
}

#[test]
fn refuses_a_corrupt_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    {
        let store = open(&path).unwrap();
        for i in 0..2000 {
            record(&store, &format!("a-fairly-long-key-to-fill-pages-{i:05}"));
        }
        store.checkpoint().unwrap();
    }
    // Scribble over a page in the middle of the b-tree, keeping the header.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 8 * page, "database too small to corrupt: {}", bytes.len());
    for b in &mut bytes[3 * page..4 * page] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the corrupt file was modified");
}

#[test]
fn refuses_another_applications_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite3");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE users (id INTEGER)").unwrap();
    let err = open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
}

#[test]
fn inspect_reads_without_creating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite3");
    assert_eq!(Store::inspect(&path).unwrap(), None);
    assert!(!path.exists());
    let store = open(&path).unwrap();
    record(&store, "x");
    let stats = Store::inspect(&path).unwrap().unwrap();
    assert_eq!(stats.last_seq, Seq(1));
}

/// Keys of all changes, oldest first, read through `Store::read`.
fn keys(store: &Store) -> Vec<String> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT key FROM changes ORDER BY seq")?;
            stmt.query_map([], |row| row.get(0))?.collect()
        })
        .unwrap()
}

#[test]
fn reads_do_not_wait_for_an_open_write_and_see_only_committed_state() {
    use std::sync::mpsc;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("journal.sqlite3")).unwrap();
    let committed = record(&store, "committed");

    let (written, is_written) = mpsc::channel();
    let (release, is_released) = mpsc::channel::<()>();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.write(|tx| {
                let seq = tx.record(Entity::Turn, "uncommitted", Op::Upsert)?;
                written.send(seq).unwrap();
                // The transaction stays open until the test says so.
                is_released.recv().unwrap();
                Ok::<_, StoreError>(seq)
            })
        })
    };
    let pending = is_written.recv().unwrap();

    // The write cannot commit before `release` is sent, so each of these
    // ran while it was open. They run on another thread so that a read that
    // waited for the write would fail the test instead of hanging it.
    let (answer, answered) = mpsc::channel();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let seen = (
                keys(&store),
                store.last_seq().unwrap(),
                store.changes_since(Seq::ZERO, 10).unwrap().len(),
                store.stats().unwrap().last_seq,
            );
            answer.send(seen).unwrap();
        })
    };
    // Not a timing assertion: only a guard against a hang if reads block.
    let seen = answered.recv_timeout(std::time::Duration::from_secs(60));
    release.send(()).unwrap();
    let seen = seen.expect("a read waited for the open write transaction");
    assert_eq!(seen, (vec!["committed".to_owned()], committed, 1, committed));
    reader.join().unwrap();

    assert_eq!(writer.join().unwrap().unwrap(), pending);
    assert_eq!(keys(&store), ["committed", "uncommitted"]);
    assert_eq!(store.last_seq().unwrap(), pending);
}

#[test]
fn reads_are_read_only_and_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("journal.sqlite3")).unwrap();
    record(&store, "a");
    let err = store.read(|conn| conn.execute("DELETE FROM changes", [])).unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert_eq!(keys(&store), ["a"]);

    // MAX_READERS reads can be inside `read` at once (each waits for all
    // the others), and more reads than that queue up instead of failing.
    let inside = std::sync::Arc::new(std::sync::Barrier::new(engram_store::MAX_READERS));
    let threads: Vec<_> = (0..engram_store::MAX_READERS + 4)
        .map(|i| {
            let (store, inside) = (store.clone(), inside.clone());
            std::thread::spawn(move || {
                store
                    .read(|conn| {
                        if i < engram_store::MAX_READERS {
                            inside.wait();
                        }
                        conn.query_row("SELECT count(*) FROM changes", [], |row| row.get::<_, i64>(0))
                    })
                    .unwrap()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 1);
    }
}
