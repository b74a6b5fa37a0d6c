-- The users someone follows, most recently followed first, after a cursor (followed_at, user id);
-- one row more than the page to learn has_more. Served by follows_follower_id_created_at_idx.
SELECT u.id, u.username, u.display_name, u.followers_count, u.following_count, u.created_at,
       u.updated_at, f.created_at AS followed_at
FROM follows f
JOIN users u ON u.id = f.followee_id
WHERE f.follower_id = $1 AND (f.created_at, f.followee_id) < ($2, $3)
ORDER BY f.created_at DESC, f.followee_id DESC
LIMIT $4
