-- The experience library: every change to an insight is an event; the
-- library is the fold of these rows in `seq` order (nothing else is kept).

CREATE TABLE insight_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    insight  TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    -- Who made the change: a person (`engram insights import`), a model,
    -- or the daemon's learning loop.
    editor   TEXT    NOT NULL,
    -- The change, as JSON (`experience::Change`).
    change   TEXT    NOT NULL
) STRICT;

CREATE INDEX insight_events_by_insight ON insight_events (insight, seq);
