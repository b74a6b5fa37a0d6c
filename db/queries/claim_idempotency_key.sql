-- Claims an idempotency key for the create in this transaction: a new row, or the row of a key
-- that has expired ($4 seconds old), taken over. Returns a row only when claimed. A key another
-- transaction has claimed but not committed makes this wait for that one (the primary key), so
-- concurrent repeats of one request run one after the other.
INSERT INTO idempotency_keys AS held (scope, idempotency_key, fingerprint)
VALUES ($1, $2, $3)
ON CONFLICT (scope, idempotency_key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, response = NULL, created_at = now()
WHERE held.created_at <= now() - make_interval(secs => $4)
RETURNING true
