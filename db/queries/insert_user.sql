INSERT INTO users (username, display_name)
VALUES ($1, $2)
RETURNING id, username, display_name, followers_count, following_count, created_at, updated_at
