-- Retrieval: collections, documents, chunks, their embeddings, and the
-- conformal certificates issued for a collection. tantivy and the vector
-- store are rebuilt from these tables (see `engram reindex`).

-- A collection's counters tell a certificate how much changed since it
-- was issued: every chunk written or removed adds one.
CREATE TABLE collections (
    name            TEXT    PRIMARY KEY,
    created_at_ms   INTEGER NOT NULL,
    chunks_added    INTEGER NOT NULL DEFAULT 0,
    chunks_removed  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE documents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    collection   TEXT    NOT NULL REFERENCES collections (name),
    tenant       TEXT    NOT NULL DEFAULT '',
    path         TEXT    NOT NULL,
    format       TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    bytes        INTEGER NOT NULL,
    tags         TEXT    NOT NULL DEFAULT '[]',
    ingested_at  INTEGER NOT NULL,
    UNIQUE (collection, tenant, path)
) STRICT;

CREATE TABLE chunks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    document    INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    char_start  INTEGER NOT NULL,
    char_end    INTEGER NOT NULL,
    headings    TEXT    NOT NULL DEFAULT '[]',
    tokens      INTEGER NOT NULL,
    hash        TEXT    NOT NULL,
    text        TEXT    NOT NULL
) STRICT;

CREATE INDEX chunks_by_document ON chunks (document, ordinal);

-- Embeddings by chunk text hash and model: re-ingesting or reindexing
-- never embeds the same text twice with the same model.
CREATE TABLE embeddings (
    hash    TEXT NOT NULL,
    model   TEXT NOT NULL,
    vector  BLOB NOT NULL,
    PRIMARY KEY (hash, model)
) STRICT, WITHOUT ROWID;

CREATE TABLE certificates (
    id             TEXT    PRIMARY KEY,
    collection     TEXT    NOT NULL REFERENCES collections (name),
    alpha          REAL    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    body           TEXT    NOT NULL
) STRICT;

CREATE INDEX certificates_by_collection ON certificates (collection, created_at_ms);
