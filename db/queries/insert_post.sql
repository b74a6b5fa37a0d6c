INSERT INTO posts (user_id, content)
VALUES ($1, $2)
RETURNING id, user_id, content, created_at, updated_at
