-- queue_near_duplicates: review queue of near-duplicate groups under one backbone group, most
-- similar first: each case is an image and the images at least `threshold` like it that sort
-- after it (a pair is found once). One case at position $pos, with the number of cases.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param threshold: DOUBLE -- minimum cosine similarity
-- param pos: INTEGER -- the case's position (0 = first)
WITH pairs AS (SELECT * FROM group_pairs($backbone, $weights_id, $precision, $threshold)),
cases AS (
    SELECT a, list(b ORDER BY similarity DESC, b) AS others,
           list(similarity ORDER BY similarity DESC, b) AS similarities,
           max(similarity) AS best
    FROM pairs
    GROUP BY a
)
SELECT [a] || others AS image_ids, similarities, best AS score, count(*) OVER () AS total
FROM cases
ORDER BY best DESC, a
LIMIT 1 OFFSET $pos;
