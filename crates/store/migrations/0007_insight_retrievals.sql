-- What the experience library was asked and what came of it: each lookup
-- of insights for a task (the candidates it weighed and the ones it
-- chose), and each outcome reported for one (a verifier's verdict or a
-- client's feedback). Evolution learns from these rows; the counters the
-- library shows are events in `insight_events`, written with them.

CREATE TABLE insight_retrievals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Whose lookup: a tenant, or '' for the operator. Feedback on it is
    -- accepted from the same caller only.
    tenant      TEXT    NOT NULL,
    -- The caller's name for the task ('' when it gave none).
    task_id     TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    -- JSON: [{"id": "ins-3", "score": 0.82}, ...], best first.
    candidates  TEXT    NOT NULL,
    -- JSON: the ids put into the prompt, in prompt order.
    chosen      TEXT    NOT NULL,
    -- Whether the LLM's applicability check chose them.
    checked     INTEGER NOT NULL
) STRICT;

CREATE TABLE insight_outcomes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    retrieval  INTEGER NOT NULL REFERENCES insight_retrievals (id),
    at_ms      INTEGER NOT NULL,
    passed     INTEGER NOT NULL,
    -- Who judged: a verifier (`lp.solve`) or a client.
    judge      TEXT    NOT NULL,
    detail     TEXT    NOT NULL
) STRICT;

CREATE INDEX insight_outcomes_by_retrieval ON insight_outcomes (retrieval);
