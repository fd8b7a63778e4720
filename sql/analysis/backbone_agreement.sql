-- backbone_agreement: how far two backbones' neighbour sets overlap, per image and overall
-- (overlap = shared neighbours / k), with the linear CKA between their embeddings.
-- param backbone_a: VARCHAR = 'mobilenet_v1'
-- param backbone_b: VARCHAR = 'xception'
-- param k: INTEGER = 10  -- neighbours compared per image
-- param sample: INTEGER = NULL  -- only the images with the N smallest image_ids (uniform); NULL: all
-- example: embedlake query backbone_agreement --param k=5
WITH chosen AS MATERIALIZED (  -- the images compared, with their first path by name (one pass
    -- over the collection; LIMIT NULL keeps all)
    SELECT image_id, min(path) AS path
    FROM images
    GROUP BY image_id
    ORDER BY image_id
    LIMIT $sample
),
sampled AS (  -- the chosen images' rows of every version of their lists: the join on image_id
    -- reaches the scan (the chosen are the smallest ids, so it skips the row groups above them)
    SELECT * FROM neighbor_versions
    WHERE backbone IN ($backbone_a, $backbone_b) AND image_id IN (SELECT image_id FROM chosen)
),
current AS (  -- of which each list's latest version is the `neighbors` view's (at 10 M images
    -- the view, ranking every row's version first, took 13.7 s a backbone, these 1.6 s)
    SELECT backbone, weights_id, precision, image_id, max(version) AS version
    FROM sampled
    GROUP BY ALL
),
listed AS (
    SELECT s.backbone, s.image_id, s.neighbor_id
    FROM sampled AS s
    SEMI JOIN current AS c
        ON c.backbone = s.backbone AND c.weights_id = s.weights_id
        AND c.precision = s.precision AND c.image_id = s.image_id AND c.version = s.version
    WHERE s.rank <= $k
),
a AS (SELECT image_id, neighbor_id FROM listed WHERE backbone = $backbone_a),
b AS (SELECT image_id, neighbor_id FROM listed WHERE backbone = $backbone_b),
per_image AS (
    SELECT image_id,
           count(*) FILTER (WHERE b.neighbor_id IS NOT NULL) / $k::DOUBLE AS overlap
    FROM a LEFT JOIN b USING (image_id, neighbor_id)
    WHERE image_id IN (SELECT image_id FROM b) AND image_id IN (SELECT image_id FROM chosen)
    GROUP BY image_id
)
SELECT 'overall' AS scope, NULL AS path, avg(overlap) AS overlap,
       (SELECT max(linear_cka) FROM backbone_cka
        WHERE (backbone_a, backbone_b) IN (($backbone_a, $backbone_b), ($backbone_b, $backbone_a))
       ) AS linear_cka,
       count(*) AS images
FROM per_image
UNION ALL
SELECT 'image', c.path, overlap, NULL, 1
FROM per_image JOIN chosen AS c USING (image_id)
ORDER BY scope DESC, overlap, path;
