-- Deletes a post and returns it as it was, so the caller knows its author and last version.
DELETE FROM posts
WHERE id = $1
RETURNING id, user_id, content, created_at, updated_at
