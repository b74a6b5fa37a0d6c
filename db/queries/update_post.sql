-- Replaces a post's content. updated_at moves strictly forward even when two edits land within one
-- microsecond or in transactions that began out of order: it is the version cache fills compare.
UPDATE posts
SET content = $2, updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
WHERE id = $1
RETURNING id, user_id, content, created_at, updated_at
