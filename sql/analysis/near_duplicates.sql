-- near_duplicates: pairs of different images that are near-identical (resized, recompressed,
-- slightly edited copies), per backbone, with their paths and cosine similarity.
-- param threshold: DOUBLE = 0.95  -- minimum cosine similarity
-- param backbone: VARCHAR = NULL  -- one backbone, or every backbone
-- example: embedlake query near_duplicates --param threshold=0.98 --param backbone=xception
WITH pairs AS MATERIALIZED (
    -- a pair can be found from either side of the graph; the macro keeps it once
    SELECT * FROM near_duplicate_pairs($threshold, $backbone)
),
named AS (  -- the first path by name of each image in a pair (only those are looked up)
    SELECT image_id, min(path) AS path
    FROM images
    WHERE image_id IN (SELECT image_id_a FROM pairs UNION ALL SELECT image_id_b FROM pairs)
    GROUP BY image_id
)
SELECT p.backbone, a.path AS path_a, b.path AS path_b, p.similarity, p.image_id_a, p.image_id_b
FROM pairs AS p
JOIN named AS a ON a.image_id = p.image_id_a
JOIN named AS b ON b.image_id = p.image_id_b
ORDER BY p.similarity DESC, p.backbone, a.path;
