-- API keys: who a write acts as. Only a SHA-256 of each key is kept (a key is 32 random bytes, so
-- a fast hash is as good as a slow one against guessing, and a stolen table yields no usable key).
-- prefix is the key's first characters, not secret: enough to tell a user's keys apart in a list
-- or a log, far too little to guess the rest.

CREATE TABLE api_keys (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    key_hash   BYTEA       NOT NULL,
    prefix     TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_key_hash_length CHECK (octet_length(key_hash) = 32)
);

-- A user's keys (the foreign key's cascade, and listing them).
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
