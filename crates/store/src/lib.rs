//! The journal of record: one SQLite file that holds every acknowledged write.
//!
//! Every change to a record is logged in the `changes` table under a
//! monotonically increasing sequence number, in the same transaction as the
//! change itself. Derived indexes (tantivy, the vector store) remember the
//! last sequence they applied and catch up with [`Store::changes_since`], so a
//! crash between a journal write and an index write loses nothing.
//!
//! ```
//! use engram_store::{Entity, Op, Store, StoreOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(&dir.path().join("journal.sqlite3"), &StoreOptions::default()).unwrap();
//! let seq = store.write(|tx| tx.record(Entity::Document, "doc-1", Op::Upsert)).unwrap();
//! let changes = store.changes_since(engram_store::Seq::ZERO, 100).unwrap();
//! assert_eq!(changes[0].seq, seq);
//! ```

mod journal;

pub use journal::{
    Change, Durability, Entity, JOURNAL_APPLICATION_ID, MAX_READERS, Op, SCHEMA_VERSION, Seq, Store, StoreError,
    StoreOptions, StoreStats, WriteTx,
};

/// The SQLite binding, re-exported so feature crates write their own tables
/// with the same version.
pub use rusqlite;
