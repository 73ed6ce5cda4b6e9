use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// `PRAGMA application_id` of an Engram journal ("Engr").
pub const JOURNAL_APPLICATION_ID: i32 = 0x456e_6772;

/// Migrations in order; migration `i` (1-based) brings the schema to version `i`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_journal.sql"),
    include_str!("../migrations/0002_retrieval.sql"),
    include_str!("../migrations/0003_memory.sql"),
    include_str!("../migrations/0004_compact_memory.sql"),
    include_str!("../migrations/0005_archive.sql"),
    include_str!("../migrations/0006_experience.sql"),
    include_str!("../migrations/0007_insight_retrievals.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Read-only connections a [`Store`] keeps at most: more concurrent reads
/// than this wait for one of them to finish (never for a write).
pub const MAX_READERS: usize = 8;

/// A position in the change log. Sequence numbers strictly increase and are
/// never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub i64);

impl Seq {
    /// Before the first change: `changes_since(Seq::ZERO)` returns everything.
    pub const ZERO: Seq = Seq(0);
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of record the journal holds. Derived indexes filter the change
/// log by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// An ingested document.
    Document,
    /// A chunk of a document.
    Chunk,
    /// A conversation.
    Conversation,
    /// One turn of a conversation.
    Turn,
    /// A compact-memory summary.
    Summary,
    /// An experience-library insight.
    Insight,
    /// An installed plugin version.
    Plugin,
    /// A capability granted to a plugin.
    Grant,
    /// A conformal calibration certificate.
    Calibration,
}

impl Entity {
    const ALL: [Entity; 9] = [
        Self::Document,
        Self::Chunk,
        Self::Conversation,
        Self::Turn,
        Self::Summary,
        Self::Insight,
        Self::Plugin,
        Self::Grant,
        Self::Calibration,
    ];

    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Chunk => "chunk",
            Self::Conversation => "conversation",
            Self::Turn => "turn",
            Self::Summary => "summary",
            Self::Insight => "insight",
            Self::Plugin => "plugin",
            Self::Grant => "grant",
            Self::Calibration => "calibration",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|entity| entity.as_str() == name)
    }
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Created or replaced.
    Upsert,
    /// Removed, with everything derived from it.
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its sequence number.
    pub seq: Seq,
    /// When it was committed, in ms since the Unix epoch.
    pub at_ms: i64,
    /// The kind of record.
    pub entity: Entity,
    /// The record's id.
    pub key: String,
    /// What happened.
    pub op: Op,
}

/// How hard a commit is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a killed process.
    Normal,
}

/// How to open the journal.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync level of commits.
    pub durability: Durability,
    /// How long a write waits on a competing writer (and a read on the
    /// rare locks a reader can meet, such as log recovery).
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { durability: Durability::Full, busy_timeout: Duration::from_secs(5) }
    }
}

/// A snapshot of the journal's state, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// The journal file.
    pub path: PathBuf,
    /// Database plus write-ahead log, in bytes.
    pub size_bytes: u64,
    /// Schema version on disk.
    pub schema_version: u32,
    /// Highest sequence number ever assigned.
    pub last_seq: Seq,
    /// Version of the linked SQLite library.
    pub sqlite_version: &'static str,
}

/// Why the journal could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not an SQLite database at all.
    #[error(
        "{} is not an SQLite database ({detail}); Engram refuses to touch it: move it aside or restore it from a backup",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The file is an SQLite database of some other application.
    #[error(
        "{} is an SQLite database but not an Engram journal ({detail}); Engram refuses to touch it: point storage.data_dir elsewhere",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Why it is not ours.
        detail: String,
    },
    /// A newer Engram wrote this journal.
    #[error(
        "journal {} has schema version {found}, newer than the {supported} this engram understands; upgrade engram (or restore a backup made by this version)",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Version on disk.
        found: u32,
        /// Version this build knows.
        supported: u32,
    },
    /// SQLite's integrity check failed.
    #[error(
        "journal {} is corrupt ({detail}); Engram refuses to modify it: restore a backup, or salvage it with `sqlite3 {} .recover`",
        path.display(),
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's first complaint.
        detail: String,
    },
    /// A migration failed; the journal was left at the previous version.
    #[error("journal {}: migration to schema version {version} failed: {source}", path.display())]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version it tried to reach.
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Any other SQLite error.
    #[error("journal {}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file-system error around the journal.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The journal of record. Cheap to clone; clones share its connections.
///
/// Writes go through one read-write connection, one transaction at a time.
/// Reads ([`Store::read`], [`Store::changes_since`], [`Store::last_seq`],
/// [`Store::stats`]) run on a small pool of read-only connections (up to
/// [`MAX_READERS`], opened on demand): in write-ahead-log mode they see the
/// last committed state and never wait for an open write transaction.
///
/// All methods block on SQLite: call them from a blocking context
/// (`tokio::task::spawn_blocking`), never directly on an async executor.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // Dropped before the writer, so the writer closes the file last and
    // SQLite folds the write-ahead log back into it.
    readers: Readers,
    writer: Mutex<Connection>,
}

/// The pool of read-only connections: a tiny hand-rolled pool (a mutex, a
/// condition variable, a cap) rather than `r2d2`, whose SQLite adapter
/// trails our rusqlite version and which brings a thread pool of its own.
struct Readers {
    busy_timeout: Duration,
    pool: Mutex<Pool>,
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Connection>,
    /// Connections open, idle or checked out.
    open: usize,
}

impl Readers {
    fn new(busy_timeout: Duration) -> Self {
        Self { busy_timeout, pool: Mutex::new(Pool::default()), freed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // The pool's state is a list and a count, consistent at every step.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, a new one while fewer than [`MAX_READERS`] are
    /// open, or else the next one another read gives back.
    fn checkout(&self, path: &Path) -> Result<Reader<'_>, StoreError> {
        let mut pool = self.lock();
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(Reader { readers: self, conn: Some(conn) });
            }
            if pool.open < MAX_READERS {
                pool.open += 1;
                drop(pool);
                return match open_reader(path, self.busy_timeout) {
                    Ok(conn) => Ok(Reader { readers: self, conn: Some(conn) }),
                    Err(err) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(err)
                    }
                };
            }
            pool = self.freed.wait(pool).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A checked-out read-only connection; back to the pool on drop.
struct Reader<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut pool = self.readers.lock();
        // One left inside a transaction (it cannot be, short of a bug) is
        // closed rather than handed to the next read.
        if conn.is_autocommit() {
            pool.idle.push(conn);
        } else {
            pool.open -= 1;
            drop(conn);
        }
        drop(pool);
        self.readers.freed.notify_one();
    }
}

/// A read-only connection to the journal `Store::open` checked and
/// migrated.
fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let err = |source| sqlite(path, source);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(err)?;
    conn.busy_timeout(busy_timeout).map_err(err)?;
    conn.execute_batch("PRAGMA query_only = ON;").map_err(err)?;
    Ok(conn)
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// A write transaction: the feature's own statements plus [`WriteTx::record`]
/// for each changed record, committed together.
pub struct WriteTx<'conn> {
    tx: rusqlite::Transaction<'conn>,
    path: &'conn Path,
    at_ms: i64,
}

impl WriteTx<'_> {
    /// Logs a change to `(entity, key)` and returns its sequence number.
    pub fn record(&mut self, entity: Entity, key: &str, op: Op) -> Result<Seq, StoreError> {
        self.tx
            .execute(
                "INSERT INTO changes (at_ms, entity, key, op) VALUES (?1, ?2, ?3, ?4)",
                params![self.at_ms, entity.as_str(), key, op.as_str()],
            )
            .map_err(|source| sqlite(self.path, source))?;
        Ok(Seq(self.tx.last_insert_rowid()))
    }

    /// The time this transaction stamps its changes with (Unix ms).
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// The underlying transaction, for the feature's own tables.
    pub fn sql(&self) -> &rusqlite::Transaction<'_> {
        &self.tx
    }
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_path_buf(), source }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if needed) the journal at `path` and migrates it to
    /// [`SCHEMA_VERSION`]. A file that is not an SQLite database, belongs to
    /// another application, was written by a newer Engram or fails SQLite's
    /// integrity check is refused and left untouched.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        }
        let conn = checked_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let err = |source| sqlite(path, source);
        conn.busy_timeout(options.busy_timeout).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("cannot enable write-ahead logging (journal_mode is {mode})")),
            });
        }
        let sync = match options.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;")).map_err(err)?;
        let mut conn = conn;
        migrate(&mut conn, path)?;
        // Readers open only now, on a journal that passed every check above;
        // the first one opens here so that a journal they cannot read fails
        // the open, not the first search.
        let readers = Readers::new(options.busy_timeout);
        drop(readers.checkout(path)?);
        Ok(Self { inner: Arc::new(Inner { path: path.to_path_buf(), readers, writer: Mutex::new(conn) }) })
    }

    /// Checks an existing journal without changing it (for `engram doctor`):
    /// `Ok(None)` when there is no file yet.
    pub fn inspect(path: &Path) -> Result<Option<StoreStats>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = checked_connection(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        stats(&conn, path).map(Some)
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (an
        // open transaction rolls back on drop), so a poisoned lock is usable.
        self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a pooled read-only connection, inside one read
    /// transaction: everything `f` queries comes from one snapshot, the
    /// last state committed before its first query.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let path = self.path();
        let mut reader = self.inner.readers.checkout(path)?;
        let Some(conn) = reader.conn.as_mut() else {
            unreachable!("a checked-out reader holds its connection until dropped")
        };
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(|source| sqlite(path, source))?;
        let value = f(&tx)?;
        // Ending a read-only transaction releases its snapshot; nothing to write.
        tx.commit().map_err(|source| sqlite(path, source))?;
        Ok(value)
    }

    /// Runs `f` in one immediate transaction and commits it; an error from
    /// `f` rolls everything back. The commit is durable per [`Durability`]
    /// when this returns.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let path = self.path();
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| E::from(sqlite(path, source)))?;
        let mut write = WriteTx { tx, path, at_ms: now_ms() };
        let value = f(&mut write)?;
        write.tx.commit().map_err(|source| E::from(sqlite(path, source)))?;
        Ok(value)
    }

    /// Runs read-only queries on a read-only connection of its own, in one
    /// read transaction: they see every write committed before the first
    /// of them (this process's included) and nothing of a write still
    /// open, for which they do not wait. A statement that writes fails.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.with_reader(|conn| f(conn).map_err(|source| sqlite(self.path(), source)))
    }

    /// Up to `limit` changes with a sequence number above `after`, oldest first.
    pub fn changes_since(&self, after: Seq, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.with_reader(|conn| changes_since(conn, self.path(), after, limit))
    }

    /// The highest sequence number ever assigned ([`Seq::ZERO`] if none).
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        self.with_reader(|conn| last_seq(conn, self.path()))
    }

    /// Size, schema version and last sequence.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.with_reader(|conn| stats(conn, self.path()))
    }

    /// Folds the write-ahead log into the database file (on shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.writer()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|source| sqlite(self.path(), source))
    }
}

/// Up to `limit` changes above `after`, oldest first.
fn changes_since(conn: &Connection, path: &Path, after: Seq, limit: usize) -> Result<Vec<Change>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, at_ms, entity, key, op FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(|source| sqlite(path, source))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![after.0, limit], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get::<_, String>(4)?))
        })
        .map_err(|source| sqlite(path, source))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, entity, key, op) = row.map_err(|source| sqlite(path, source))?;
        let corrupt = |what: &str| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("change {seq} has an unknown {what}"),
        };
        let entity = Entity::parse(&entity).ok_or_else(|| corrupt("entity"))?;
        let op = match op.as_str() {
            "upsert" => Op::Upsert,
            "delete" => Op::Delete,
            _ => return Err(corrupt("op")),
        };
        out.push(Change { seq: Seq(seq), at_ms, entity, key, op });
    }
    Ok(out)
}

/// Opens `path` and refuses anything that is not a healthy Engram journal
/// this build can read, before writing a single byte.
fn checked_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    check_header(path)?;
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|source| sqlite(path, source))?;
    let read = |sql: &str| -> Result<i64, StoreError> {
        conn.query_row(sql, [], |row| row.get(0)).map_err(|source| classify(path, source))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let objects = read("SELECT count(*) FROM sqlite_schema")?;
    if application_id != i64::from(JOURNAL_APPLICATION_ID) && (application_id != 0 || objects > 0) {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
            detail: format!("application_id {application_id:#x}, {objects} schema objects"),
        });
    }
    let found = u32::try_from(version).unwrap_or(u32::MAX);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: path.to_path_buf(), found, supported: SCHEMA_VERSION });
    }
    let verdict: String =
        conn.query_row("PRAGMA quick_check(1)", [], |row| row.get(0)).map_err(|source| classify(path, source))?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt { path: path.to_path_buf(), detail: verdict });
    }
    Ok(conn)
}

/// An empty file is a new database; anything else must carry SQLite's magic.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
    };
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
        }
    }
    if filled == 0 || &head == SQLITE_MAGIC {
        return Ok(());
    }
    Err(StoreError::NotADatabase {
        path: path.to_path_buf(),
        detail: format!("its first {filled} bytes are not the SQLite header"),
    })
}

fn classify(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            StoreError::NotADatabase { path: path.to_path_buf(), detail: source.to_string() }
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path: path.to_path_buf(), detail: source.to_string() }
        }
        _ => sqlite(path, source),
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|s| sqlite(path, s))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as u32 + 1;
        let failed = |source| StoreError::Migration { path: path.to_path_buf(), version, source };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {JOURNAL_APPLICATION_ID}; PRAGMA user_version = {version};"
        ))
        .map_err(failed)?;
        if version == 1 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('created_at_ms', ?1), ('created_by', ?2)",
                params![now_ms().to_string(), concat!("engram-store ", env!("CARGO_PKG_VERSION"))],
            )
            .map_err(failed)?;
        }
        tx.commit().map_err(failed)?;
    }
    Ok(())
}

fn last_seq(conn: &Connection, path: &Path) -> Result<Seq, StoreError> {
    // sqlite_sequence keeps the high-water mark even after rows are deleted.
    let seq: Option<i64> = conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |row| row.get(0))
        .optional()
        .map_err(|source| sqlite(path, source))?;
    Ok(Seq(seq.unwrap_or(0)))
}

fn stats(conn: &Connection, path: &Path) -> Result<StoreStats, StoreError> {
    let schema_version: u32 =
        conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|source| sqlite(path, source))?;
    let last_seq = if schema_version == 0 { Seq::ZERO } else { last_seq(conn, path)? };
    let file_len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok(StoreStats {
        path: path.to_path_buf(),
        size_bytes: file_len(path) + file_len(Path::new(&wal)),
        schema_version,
        last_seq,
        sqlite_version: rusqlite::version(),
    })
}
