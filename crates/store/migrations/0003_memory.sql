-- Memory: each tenant's conversations and their turns (the episodic
-- memory). The turns' BM25 and vector indexes are rebuilt from these rows.

CREATE TABLE conversations (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant         TEXT    NOT NULL DEFAULT '',
    name           TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (tenant, name)
) STRICT;

CREATE TABLE turns (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation  INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- 0, 1, 2... in the order the turns were appended.
    ordinal       INTEGER NOT NULL,
    speaker       TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    -- When it was said (Unix ms): the caller's time, else the append's.
    time_ms       INTEGER NOT NULL,
    tags          TEXT    NOT NULL DEFAULT '[]',
    importance    REAL    NOT NULL DEFAULT 0,
    pinned        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conversation, ordinal)
) STRICT;
