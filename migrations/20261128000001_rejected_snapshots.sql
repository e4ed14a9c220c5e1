-- Rows PostgreSQL refused (a value its types cannot hold, a broken constraint, or an
-- error that kept repeating for one row). The writer isolates each by bisecting its
-- batch and keeps it here instead of only counting it, so nothing is lost silently.

CREATE TABLE rejected_snapshots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rejected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CHECK (kind IN ('snapshot', 'contract', 'position')),
    broker      text,
    sqlstate    text,
    message     text NOT NULL,
    row_json    jsonb NOT NULL
);
CREATE INDEX rejected_snapshots_time_idx ON rejected_snapshots (rejected_at);

COMMENT ON TABLE rejected_snapshots IS
    'Dead letters of the batch writer: rows PostgreSQL refused, with its SQLSTATE and message.';
COMMENT ON COLUMN rejected_snapshots.kind IS
    'snapshot: a greek_snapshots row; contract: a contracts row; position: a positions_current refresh.';
COMMENT ON COLUMN rejected_snapshots.sqlstate IS 'The server''s SQLSTATE (22xxx data, 23xxx constraint, ...).';
COMMENT ON COLUMN rejected_snapshots.row_json IS
    'The refused row under its table''s column names. A NUL in its text (which PostgreSQL cannot store) is spelled out as the six characters \u0000.';
