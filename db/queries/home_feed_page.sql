-- One page of a user's home feed: their own posts and those of everyone they follow, newest first,
-- strictly older than a cursor (created_at, id); one row more than the page to learn has_more.
-- One index descent per author (posts_user_id_created_at_id_idx), each stopping at the page size:
-- the cost grows with the number of followees, not with their posts or with the depth.
SELECT p.id, p.user_id, p.content, p.created_at, p.updated_at
FROM (
    SELECT $1::bigint AS author
    UNION ALL
    SELECT followee_id FROM follows WHERE follower_id = $1
) AS sources
CROSS JOIN LATERAL (
    SELECT id, user_id, content, created_at, updated_at
    FROM posts
    WHERE user_id = sources.author AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC
    LIMIT $4
) AS p
ORDER BY p.created_at DESC, p.id DESC
LIMIT $4
