-- Replaces a user's display name; updated_at moves strictly forward (see update_post.sql).
UPDATE users
SET display_name = $2, updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
WHERE id = $1
RETURNING id, username, display_name, followers_count, following_count, created_at, updated_at
