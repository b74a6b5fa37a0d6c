-- Deletes at most $2 idempotency keys older than $1 seconds, oldest first (the created_at index).
DELETE FROM idempotency_keys
WHERE (scope, idempotency_key) IN (
    SELECT scope, idempotency_key
    FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1)
    ORDER BY created_at
    LIMIT $2
)
