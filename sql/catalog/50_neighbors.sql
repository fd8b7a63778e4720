-- neighbors: each image's top-k most similar images (rank 1 = the nearest other image), per
-- backbone, weights and precision. The graph is maintained: each update writes a part with the
-- complete lists of the images whose lists changed (`neighbors/<group>-<version>.parquet`, a
-- legacy `<group>.parquet` is version 0); per image, the latest version's list is current
-- (resolved over keys alone: k rows per image, no vectors).
-- neighbor_versions: every stored row of every version of every list, with its `version` (the
-- part's); `neighbors` is the latest version's rows per image.
-- part_version(filename): the version a graph part's name carries (`<group>-<version>.parquet`;
-- a legacy `<group>.parquet`: 0).
CREATE OR REPLACE MACRO part_version(file_name) AS
    coalesce(try_cast(regexp_extract(file_name, '-(\d{8})\.parquet$', 1) AS INTEGER), 0);

CREATE OR REPLACE VIEW neighbor_versions AS
SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method,
    part_version(filename) AS version
FROM read_parquet(lake_path('neighbors/*.parquet'), union_by_name = true, filename = true);

CREATE OR REPLACE VIEW neighbors AS
SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method
FROM neighbor_versions
QUALIFY version = max(version) OVER (PARTITION BY backbone, weights_id, precision, image_id);

-- close_floor(): a list's rows at or above this similarity are kept with its scores, as `close`
-- (tasks/schemas.py, CLOSE_FLOOR).
CREATE OR REPLACE MACRO close_floor() AS 0.9::FLOAT;  -- compared as the writer does, in float32

-- list_score_versions: per group, image and version, the stored list's similarity_sum, length n,
-- max_similarity (its best), method, and close: its rows at or above close_floor() (a list of
-- {neighbor_id, rank, similarity}). The graph writes them, one row a list (a tenth of the rows),
-- in `list_scores/<the neighbours part's name>`, before the neighbours part, whose rows then
-- carry their `version`. A scores part without its neighbours part (an update killed between
-- the two writes) is left out; a neighbours part written before (no `version` column) is scored
-- from its rows here: the filter on that null column skips the other parts by their
-- statistics, reading none of their rows.
CREATE OR REPLACE VIEW list_score_versions AS
WITH neighbor_parts AS (  -- listed, not read
    SELECT parse_filename(file) AS part FROM glob(lake_path('neighbors/*.parquet'))
),
scored AS (
    SELECT *, parse_filename(filename) AS part
    FROM read_parquet(lake_path('list_scores/*.parquet'), union_by_name = true, filename = true)
),
unscored AS (
    SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method,
        part_version(filename) AS part_version
    FROM read_parquet(lake_path('neighbors/*.parquet'), union_by_name = true, filename = true)
    WHERE version IS NULL
)
SELECT backbone, weights_id, precision, image_id, part_version(part) AS version, similarity_sum,
    n, max_similarity, method, close
FROM scored
WHERE part IN (SELECT part FROM neighbor_parts)
UNION ALL
SELECT backbone, weights_id, precision, image_id, part_version AS version,
    sum(similarity)::DOUBLE AS similarity_sum, count(*)::SMALLINT AS n,
    max(similarity) AS max_similarity, any_value(method) AS method,
    coalesce(
        list({'neighbor_id': neighbor_id, 'rank': rank, 'similarity': similarity} ORDER BY rank)
            FILTER (WHERE similarity >= close_floor()),
        []
    ) AS close
FROM unscored
GROUP BY backbone, weights_id, precision, image_id, part_version;

-- list_scores(): each current list's similarity_sum and length (n), per group and image (the
-- outlier score is sum / n, the mean similarity to the image's neighbours): the latest version's
-- of `list_score_versions`, where the mean over the `neighbors` view's window over every row took
-- twice as long (5.4 -> 2.7 s at 1 M images).
CREATE OR REPLACE MACRO list_scores() AS TABLE
SELECT backbone, weights_id, precision, image_id,
    arg_max(similarity_sum, version) AS similarity_sum, arg_max(n, version) AS n
FROM list_score_versions
GROUP BY backbone, weights_id, precision, image_id;

-- backbone_cka: linear CKA between each pair of backbones over the images both embedded.
CREATE OR REPLACE VIEW backbone_cka AS
SELECT * FROM read_parquet(lake_path('agreement/*.parquet'), union_by_name = true);

-- image_paths: one path per image_id in the current collection (the first by name), for labels.
CREATE OR REPLACE VIEW image_paths AS
SELECT image_id, min(path) AS path, count(*) AS n_paths
FROM images
GROUP BY image_id;
