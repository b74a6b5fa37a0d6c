-- A claimed key's request fingerprint and the response its create answered with.
SELECT fingerprint, response
FROM idempotency_keys
WHERE scope = $1 AND idempotency_key = $2
