-- Forgetting by capacity: a conversation's lowest-retention turns are
-- archived — kept here verbatim, out of the turns' indexes — and can be
-- restored. Pinned turns (`turns.pinned`) are never archived by capacity.

ALTER TABLE turns ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;

CREATE INDEX turns_hot ON turns (conversation, archived);
