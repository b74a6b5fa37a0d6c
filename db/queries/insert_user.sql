-- Creates a user and their first API key (by its hash) in one statement: no user without a key.
WITH created AS (
    INSERT INTO users (username, display_name)
    VALUES ($1, $2)
    RETURNING id, username, display_name, followers_count, following_count, created_at, updated_at
),
key AS (
    INSERT INTO api_keys (user_id, key_hash, prefix)
    SELECT id, $3, $4 FROM created
)
SELECT * FROM created
