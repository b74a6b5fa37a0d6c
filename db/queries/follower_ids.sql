-- Up to $2 followers of an author: the fan-out targets of a post, or proof of a celebrity when
-- the limit is reached.
SELECT follower_id FROM follows WHERE followee_id = $1 LIMIT $2
