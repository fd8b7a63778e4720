-- queue_outliers: review queue of one backbone group's outliers, lowest score first (the mean
-- cosine similarity to the graph neighbours, as the `outliers` query). One case at $pos.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param pos: INTEGER -- the case's position (0 = first)
SELECT [image_id] AS image_ids, similarity_sum / n AS score, count(*) OVER () AS total
FROM list_scores()
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
ORDER BY score, image_id
LIMIT 1 OFFSET $pos;
