-- Unfollows, idempotently (see follow.sql). Returns whether a follow was removed, or no row at all
-- when either user does not exist.
WITH pair AS (
    SELECT follower.id AS follower_id, followee.id AS followee_id
    FROM users follower, users followee
    WHERE follower.id = $1 AND followee.id = $2
),
deleted AS (
    DELETE FROM follows
    WHERE follower_id = $1 AND followee_id = $2
    RETURNING follower_id
),
counted AS (
    UPDATE users
    SET following_count = following_count - (id = $1)::int,
        followers_count = followers_count - (id = $2)::int,
        updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
    WHERE id IN ($1, $2) AND EXISTS (SELECT 1 FROM deleted)
)
SELECT EXISTS (SELECT 1 FROM deleted) FROM pair
