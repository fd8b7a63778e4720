-- image_neighbors: one image's neighbour lists under every backbone group, rank first, with a
-- path per neighbour: the explorer shows the groups side by side.
-- param image_id: VARCHAR
-- param k: INTEGER -- neighbours per group
WITH listed AS (
    SELECT backbone, weights_id, precision, rank, neighbor_id, similarity
    FROM neighbors
    WHERE image_id = $image_id AND rank <= $k
),
paths AS (  -- the listed images' paths only (not image_paths: an aggregate of the collection)
    SELECT image_id, min(path) AS path
    FROM images
    WHERE image_id IN (SELECT neighbor_id FROM listed)
    GROUP BY image_id
)
SELECT n.backbone, n.weights_id, n.precision, n.rank, n.neighbor_id, n.similarity, p.path
FROM listed AS n
LEFT JOIN paths AS p ON p.image_id = n.neighbor_id
ORDER BY n.backbone, n.weights_id, n.precision, n.rank;
