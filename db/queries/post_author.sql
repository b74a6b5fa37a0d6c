-- Who wrote a post: an edit or a delete acts as that user.
SELECT user_id
FROM posts
WHERE id = $1
