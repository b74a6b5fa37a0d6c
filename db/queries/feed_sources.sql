-- Whose posts make up a reader's home feed, with their follower counts (which decide celebrity):
-- the reader and everyone they follow.
SELECT id, followers_count FROM users WHERE id = $1
UNION ALL
SELECT u.id, u.followers_count
FROM follows f
JOIN users u ON u.id = f.followee_id
WHERE f.follower_id = $1
