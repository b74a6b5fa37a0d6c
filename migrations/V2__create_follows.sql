-- Who follows whom, and each user's counts. The primary key answers "does X follow Y" and lists
-- X's followees (the home feed); the two indexes serve the follow lists newest first by keyset, and
-- the followee one also "every follower of Y" (fan-out) by its leading column.

CREATE TABLE follows (
    follower_id BIGINT      NOT NULL,
    followee_id BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT follows_pkey PRIMARY KEY (follower_id, followee_id),
    CONSTRAINT follows_follower_id_fkey FOREIGN KEY (follower_id) REFERENCES users (id),
    CONSTRAINT follows_followee_id_fkey FOREIGN KEY (followee_id) REFERENCES users (id),
    CONSTRAINT follows_not_self CHECK (follower_id <> followee_id)
);

CREATE INDEX follows_followee_id_created_at_idx
    ON follows (followee_id, created_at DESC, follower_id DESC);
CREATE INDEX follows_follower_id_created_at_idx
    ON follows (follower_id, created_at DESC, followee_id DESC);

-- Kept in the same transaction as every follow and unfollow, so a user object never needs a count(*).
ALTER TABLE users
    ADD COLUMN followers_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN following_count BIGINT NOT NULL DEFAULT 0;
