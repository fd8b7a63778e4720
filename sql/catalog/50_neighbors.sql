-- neighbors: each image's top-k most similar images (rank 1 = the nearest other image), per
-- backbone, weights and precision. The graph is maintained: each update writes a part with the
-- complete lists of the images whose lists changed (`neighbors/<group>-<version>.parquet`, a
-- legacy `<group>.parquet` is version 0); per image, the latest version's list is current
-- (resolved over keys alone: k rows per image, no vectors). Most lists are in one version only:
-- those in more are found first by a hash (a collision only sends a list to be resolved), and
-- only they are resolved, so the view costs a scan and a count, not a window over every row
-- (tests/unit/test_graph.py keeps the window as the reference the view is checked against).
CREATE OR REPLACE VIEW neighbors AS
WITH parts AS NOT MATERIALIZED (
    SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method,
        coalesce(try_cast(regexp_extract(filename, '-(\d{8})\.parquet$', 1) AS INTEGER), 0)
            AS version
    FROM read_parquet(lake_path('neighbors/*.parquet'), union_by_name = true, filename = true)
),
contested AS (
    SELECT hash(backbone, weights_id, precision, image_id) AS h
    FROM parts
    GROUP BY h
    HAVING min(version) <> max(version)
),
latest AS (
    SELECT backbone, weights_id, precision, image_id, max(version) AS version
    FROM parts
    WHERE hash(backbone, weights_id, precision, image_id) IN (SELECT h FROM contested)
    GROUP BY backbone, weights_id, precision, image_id
)
SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method
FROM parts
WHERE hash(backbone, weights_id, precision, image_id) NOT IN (SELECT h FROM contested)
UNION ALL
SELECT p.backbone, p.weights_id, p.precision, p.image_id, p.neighbor_id, p.rank, p.similarity,
    p.method
FROM parts AS p
SEMI JOIN latest AS l
    ON l.backbone IS NOT DISTINCT FROM p.backbone
    AND l.weights_id IS NOT DISTINCT FROM p.weights_id
    AND l.precision IS NOT DISTINCT FROM p.precision
    AND l.image_id = p.image_id
    AND l.version = p.version;

-- backbone_cka: linear CKA between each pair of backbones over the images both embedded.
CREATE OR REPLACE VIEW backbone_cka AS
SELECT * FROM read_parquet(lake_path('agreement/*.parquet'), union_by_name = true);

-- image_paths: one path per image_id in the current collection (the first by name), for labels.
CREATE OR REPLACE VIEW image_paths AS
SELECT image_id, min(path) AS path, count(*) AS n_paths
FROM images
GROUP BY image_id;
