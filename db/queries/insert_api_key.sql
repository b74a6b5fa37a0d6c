-- Records a new API key of a user by its hash; the key itself is never stored.
INSERT INTO api_keys (user_id, key_hash, prefix)
VALUES ($1, $2, $3)
