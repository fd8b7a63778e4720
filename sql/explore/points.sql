-- points: every point of one map group, as x, y and key (the first 16 hex digits of image_id as
-- an unsigned 64-bit integer), unordered: the server sorts them by key, the explorer's one order,
-- and keeps the keys (8 bytes a point) to place colour and filter results in that order. A row
-- whose image_id is not hex (lake data is untrusted) has no key and is left out.
-- The `map` view's rule (the group's latest map version; per image its latest part, by name;
-- current images only), computed on keys, not on 64-character ids, and without a window: only
-- the images placed more than once in that version (few) are ranked. 10 M points are read within
-- the explorer's memory limit (bench/explore_scale.py).
-- param backbone, weights_id, precision: VARCHAR -- the group
WITH parts AS NOT MATERIALIZED (
    SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, x, y, map_version, filename
    FROM read_parquet(lake_path('map/*.parquet'), union_by_name = true, filename = true)
    WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
      AND length(image_id) = 64
),
latest AS NOT MATERIALIZED (
    SELECT key, x, y, filename
    FROM parts
    WHERE map_version = (SELECT max(map_version) FROM parts) AND key IS NOT NULL
),
contested AS (SELECT key FROM latest GROUP BY key HAVING count(*) > 1),
winners AS (
    SELECT key, max(filename) AS filename FROM latest SEMI JOIN contested USING (key) GROUP BY key
),
placed AS (
    SELECT key, x, y FROM latest ANTI JOIN contested USING (key)
    UNION ALL
    SELECT key, x, y FROM latest SEMI JOIN winners USING (key, filename)
)
SELECT x::FLOAT AS x, y::FLOAT AS y, key
FROM placed
WHERE key IN (SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) FROM images);
