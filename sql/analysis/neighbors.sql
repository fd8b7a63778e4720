-- neighbors: an image's nearest images per backbone, with paths and cosine similarity.
-- param path: VARCHAR = NULL  -- the image's path relative to SOURCE (or give image_id)
-- param image_id: VARCHAR = NULL  -- the image's SHA-256 (or give path)
-- param k: INTEGER = 5  -- neighbours per backbone (at most the graph's k)
-- example: embedlake query neighbors --param path=cat/chelsea.jpg --param k=3
WITH query AS (
    SELECT DISTINCT image_id FROM files
    WHERE ($path IS NOT NULL AND path = $path) OR ($image_id IS NOT NULL AND image_id = $image_id)
)
SELECT n.backbone, n.rank, p.path AS neighbor_path, n.similarity, n.neighbor_id
FROM neighbors AS n
JOIN query AS q USING (image_id)
LEFT JOIN image_paths AS p ON p.image_id = n.neighbor_id
WHERE n.rank <= $k
ORDER BY n.backbone, n.rank;
