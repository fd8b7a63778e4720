-- image_neighbors: one image's neighbour lists under every backbone group, rank first, with a
-- path per neighbour: the explorer shows the groups side by side.
-- param image_id: VARCHAR
-- param k: INTEGER -- neighbours per group
SELECT n.backbone, n.weights_id, n.precision, n.rank, n.neighbor_id, n.similarity, p.path
FROM neighbors AS n
LEFT JOIN image_paths AS p ON p.image_id = n.neighbor_id
WHERE n.image_id = $image_id AND n.rank <= $k
ORDER BY n.backbone, n.weights_id, n.precision, n.rank;
