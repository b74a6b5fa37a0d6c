-- The newest posts of a set of authors, merged newest first: one index descent per author, each
-- stopping at the limit (an inbox rebuild reads at most its cap plus one).
SELECT p.id, p.user_id, p.content, p.created_at, p.updated_at
FROM unnest($1::bigint[]) AS authors (author)
CROSS JOIN LATERAL (
    SELECT id, user_id, content, created_at, updated_at
    FROM posts
    WHERE user_id = authors.author
    ORDER BY created_at DESC, id DESC
    LIMIT $2
) AS p
ORDER BY p.created_at DESC, p.id DESC
LIMIT $2
