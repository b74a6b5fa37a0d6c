-- Idempotent creates: one row per Idempotency-Key a client sent with a create that succeeded, in
-- the same transaction as the row it created. The primary key serializes concurrent repeats: the
-- second waits for the first's commit, then finds its row and answers with the stored response.
-- scope keeps clients apart: 'posts:<author id>' for posts, 'users' for sign-ups.

CREATE TABLE idempotency_keys (
    scope           TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    -- SHA-256 of what the request asked for: the same key with another request is refused.
    fingerprint     BYTEA       NOT NULL,
    -- The created resource as first answered (JSON text, byte for byte); set before the commit.
    response        TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, idempotency_key)
);

-- The sweep of expired keys, oldest first.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
