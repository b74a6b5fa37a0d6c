-- One page of a user's posts, newest first; asks for one row more than the page to learn has_more.
SELECT id, user_id, content, created_at, updated_at
FROM posts
WHERE user_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2 OFFSET $3
