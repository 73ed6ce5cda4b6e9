-- Compact memory: every version of each conversation's running summaries.
-- Level 1 is a one-sentence summary of the whole conversation, rewritten
-- as turns arrive; level 2 rolls the recent level-1 summaries up every few
-- turns. A version covers the turns with ordinals [first_ordinal,
-- last_ordinal]; forgetting a turn deletes every version that covered it.

CREATE TABLE summaries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation   INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    level          INTEGER NOT NULL CHECK (level IN (1, 2)),
    text           TEXT    NOT NULL,
    first_ordinal  INTEGER NOT NULL,
    last_ordinal   INTEGER NOT NULL,
    -- The model that wrote it.
    model          TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL
) STRICT;

CREATE INDEX summaries_by_conversation ON summaries (conversation, level, last_ordinal);

-- Bumped by every forget in the conversation: a summary written from turns
-- read before a forget is not stored after it.
ALTER TABLE conversations ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
