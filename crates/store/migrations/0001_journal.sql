-- The change log every derived index follows, and journal metadata.
-- AUTOINCREMENT: a sequence number is never reused, even after the rows
-- holding the largest ones are deleted (compaction), so "changes since N"
-- stays correct forever.
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    entity  TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    op      TEXT    NOT NULL CHECK (op IN ('upsert', 'delete'))
) STRICT;

CREATE INDEX changes_by_entity ON changes (entity, seq);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
