-- The user an API key acts as, found by the key's hash (the unique index).
SELECT user_id
FROM api_keys
WHERE key_hash = $1
