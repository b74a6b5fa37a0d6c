-- The users who follow someone, most recent first, after a cursor (followed_at, user id); one row
-- more than the page to learn has_more. Served by follows_followee_id_created_at_idx.
SELECT u.id, u.username, u.display_name, u.followers_count, u.following_count, u.created_at,
       u.updated_at, f.created_at AS followed_at
FROM follows f
JOIN users u ON u.id = f.follower_id
WHERE f.followee_id = $1 AND (f.created_at, f.follower_id) < ($2, $3)
ORDER BY f.created_at DESC, f.follower_id DESC
LIMIT $4
