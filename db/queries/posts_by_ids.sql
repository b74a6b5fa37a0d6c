SELECT id, user_id, content, created_at, updated_at
FROM posts
WHERE id = ANY($1)
