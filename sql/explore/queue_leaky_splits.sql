-- queue_leaky_splits: review queue of near-duplicate pairs (similarity >= threshold under one
-- backbone group) whose sidecar `column` (the split) differs, most similar first. One case at
-- $pos, with the two values and the number of cases.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param threshold: DOUBLE -- minimum cosine similarity
-- param column: VARCHAR -- the sidecar column holding the split
-- param pos: INTEGER -- the case's position (0 = first)
WITH pairs AS (SELECT * FROM group_pairs($backbone, $weights_id, $precision, $threshold)),
splits AS (SELECT image_id, value FROM metadata_values($column) WHERE value IS NOT NULL)
SELECT [p.a, p.b] AS image_ids, p.similarity AS score, sa.value AS value_a, sb.value AS value_b,
       count(*) OVER () AS total
FROM pairs AS p
JOIN splits AS sa ON sa.image_id = p.a
JOIN splits AS sb ON sb.image_id = p.b
WHERE sa.value <> sb.value
ORDER BY p.similarity DESC, p.a, p.b
LIMIT 1 OFFSET $pos;
