-- backbone_agreement: how far two backbones' neighbour sets overlap, per image and overall
-- (overlap = shared neighbours / k), with the linear CKA between their embeddings.
-- param backbone_a: VARCHAR = 'mobilenet_v1'
-- param backbone_b: VARCHAR = 'xception'
-- param k: INTEGER = 10  -- neighbours compared per image
-- example: embedlake query backbone_agreement --param k=5
WITH a AS (SELECT image_id, neighbor_id FROM neighbors WHERE backbone = $backbone_a AND rank <= $k),
b AS (SELECT image_id, neighbor_id FROM neighbors WHERE backbone = $backbone_b AND rank <= $k),
per_image AS (
    SELECT image_id,
           count(*) FILTER (WHERE b.neighbor_id IS NOT NULL) / $k::DOUBLE AS overlap
    FROM a LEFT JOIN b USING (image_id, neighbor_id)
    WHERE image_id IN (SELECT image_id FROM b)
    GROUP BY image_id
)
SELECT 'overall' AS scope, NULL AS path, avg(overlap) AS overlap,
       (SELECT max(linear_cka) FROM backbone_cka
        WHERE (backbone_a, backbone_b) IN (($backbone_a, $backbone_b), ($backbone_b, $backbone_a))
       ) AS linear_cka,
       count(*) AS images
FROM per_image
UNION ALL
SELECT 'image', p.path, overlap, NULL, 1
FROM per_image JOIN image_paths AS p USING (image_id)
ORDER BY scope DESC, overlap, path;
