-- Stores the response of the create that claimed the key, before its transaction commits.
UPDATE idempotency_keys
SET response = $3
WHERE scope = $1 AND idempotency_key = $2
