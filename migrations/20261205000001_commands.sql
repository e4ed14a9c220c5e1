-- The gateway's commands (js-gateway §2.1): one row per request while it runs and for
-- 24 h after, so a redelivered requestId or a reused Idempotency-Key gets the first
-- result and causes no second side effect. The database enforces it: the request id
-- and (sub-account, key) are unique, so two engines — or two gateways sending the
-- same key at once — cannot both start the command.
CREATE TABLE command_requests (
    request_id      text PRIMARY KEY,
    kind            text NOT NULL,
    sub_account_id  text,
    idempotency_key text,
    body            jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('RUNNING', 'DONE')),
    http_status     integer,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX command_requests_key ON command_requests (coalesce(sub_account_id, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX command_requests_created ON command_requests (created_at);

-- Every trading action: who asked, what, when, and how it ended. Append-only: the
-- trigger refuses updates and deletes. Secrets never reach it (commands carry none;
-- the gateway's token is checked before a command exists).
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    request_id      text NOT NULL,
    kind            text NOT NULL,
    sub_account_id  text,
    user_id         text,
    role            text NOT NULL,
    source          text NOT NULL,
    http_status     integer NOT NULL,
    code            text,
    command         jsonb NOT NULL,
    result          jsonb NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_account ON audit_log (sub_account_id, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
