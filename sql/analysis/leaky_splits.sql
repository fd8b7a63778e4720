-- leaky_splits: near-duplicate pairs (neighbour graph, cosine >= threshold, as near_duplicates)
-- whose values in a sidecar column differ: e.g. the same picture in both train and test.
-- param column: VARCHAR = 'split'  -- the sidecar column holding the split (or any group)
-- param threshold: DOUBLE = 0.95  -- minimum cosine similarity
-- param backbone: VARCHAR = NULL  -- one backbone, or every backbone
-- example: embedlake query leaky_splits --param column=fold --param threshold=0.98
WITH pairs AS (SELECT * FROM near_duplicate_pairs($threshold, $backbone)),
groups AS (
    SELECT image_id, value FROM metadata_values($column) WHERE value IS NOT NULL
)
SELECT p.backbone, a.path AS path_a, ga.value AS value_a, b.path AS path_b, gb.value AS value_b,
       p.similarity, p.image_id_a, p.image_id_b
FROM pairs AS p
JOIN groups AS ga ON ga.image_id = p.image_id_a
JOIN groups AS gb ON gb.image_id = p.image_id_b
JOIN image_paths AS a ON a.image_id = p.image_id_a
JOIN image_paths AS b ON b.image_id = p.image_id_b
WHERE ga.value <> gb.value
ORDER BY p.similarity DESC, p.backbone, a.path;
