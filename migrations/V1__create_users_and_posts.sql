-- Users and their posts. PostgreSQL is the source of truth; Redis only caches what is here.

CREATE TABLE users (
    id           BIGSERIAL PRIMARY KEY,
    username     TEXT        NOT NULL,
    display_name TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE posts (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    content    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT posts_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- Serves a user's newest-first page: an index scan in order, no sort, for any OFFSET.
CREATE INDEX posts_user_id_created_at_id_idx ON posts (user_id, created_at DESC, id DESC);
