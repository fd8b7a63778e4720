-- neighbors: each image's top-k most similar images (rank 1 = the nearest other image), per
-- backbone, weights and precision. The graph is maintained: each update writes a part with the
-- complete lists of the images whose lists changed (`neighbors/<group>-<version>.parquet`, a
-- legacy `<group>.parquet` is version 0); per image, the latest version's list is current
-- (resolved over keys alone: k rows per image, no vectors).
CREATE OR REPLACE VIEW neighbors AS
WITH parts AS (
    SELECT *, coalesce(try_cast(regexp_extract(filename, '-(\d{8})\.parquet$', 1) AS INTEGER), 0)
        AS version
    FROM read_parquet(lake_path('neighbors/*.parquet'), union_by_name = true, filename = true)
)
SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method
FROM parts
QUALIFY version = max(version) OVER (PARTITION BY backbone, weights_id, precision, image_id);

-- backbone_cka: linear CKA between each pair of backbones over the images both embedded.
CREATE OR REPLACE VIEW backbone_cka AS
SELECT * FROM read_parquet(lake_path('agreement/*.parquet'), union_by_name = true);

-- image_paths: one path per image_id in the current collection (the first by name), for labels.
CREATE OR REPLACE VIEW image_paths AS
SELECT image_id, min(path) AS path, count(*) AS n_paths
FROM images
GROUP BY image_id;
