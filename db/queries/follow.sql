-- Follows, idempotently: the counts move only when a row was inserted, and both users' updated_at
-- (their cache version) moves with them. Returns whether the follow is new, or no row at all when
-- either user does not exist.
WITH pair AS (
    SELECT follower.id AS follower_id, followee.id AS followee_id
    FROM users follower, users followee
    WHERE follower.id = $1 AND followee.id = $2
),
inserted AS (
    INSERT INTO follows (follower_id, followee_id)
    SELECT follower_id, followee_id FROM pair
    ON CONFLICT DO NOTHING
    RETURNING follower_id, followee_id
),
counted AS (
    UPDATE users
    SET following_count = following_count + (id = $1)::int,
        followers_count = followers_count + (id = $2)::int,
        updated_at = GREATEST(now(), updated_at + interval '1 microsecond')
    WHERE id IN ($1, $2) AND EXISTS (SELECT 1 FROM inserted)
)
SELECT EXISTS (SELECT 1 FROM inserted) FROM pair
