SELECT id, username, display_name, followers_count, following_count, created_at, updated_at
FROM users
WHERE id = $1
