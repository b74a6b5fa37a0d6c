-- One page of a user's posts strictly older than a cursor (created_at, id), newest first; asks for
-- one row more than the page to learn has_more. The row comparison is an index condition on
-- posts_user_id_created_at_id_idx, so the cost is that of a first page at any depth.
SELECT id, user_id, content, created_at, updated_at
FROM posts
WHERE user_id = $1 AND (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $4
