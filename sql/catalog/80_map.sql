-- map: a 2-D place per image of the current collection, per backbone group: image_id, backbone,
-- weights_id, precision, x, y, map_version, placed ('fit': laid out by the fit; 'neighbors':
-- the similarity-weighted mean of its placed neighbours' places; 'fallback': no neighbour had a
-- place), run_id (the run, or reindex, that placed it). Only each group's latest map_version
-- (a new one at each fit: `embedlake reindex`, or once the images placed since the fit exceed
-- half of those it wrote) and, per image, its latest row (parts are named
-- <group>-<version>-<run_id>: by name, the latest last). See tasks/maps.py. No window: an image
-- is placed once per version but for a rerun of a killed run, so only images with more than one
-- row are ranked (a window over 10 M rows ran out of the explorer's memory).
CREATE OR REPLACE VIEW map AS
WITH parts AS NOT MATERIALIZED (
    SELECT *, hash(backbone, weights_id, precision, image_id) AS h
    FROM read_parquet(lake_path('map/*.parquet'), union_by_name = true, filename = true)
),
versions AS (
    SELECT backbone, weights_id, precision, max(map_version) AS map_version FROM parts GROUP BY ALL
),
latest AS NOT MATERIALIZED (
    SELECT * FROM parts SEMI JOIN versions USING (backbone, weights_id, precision, map_version)
),
contested AS (  -- by a hash of the image's key: a collision only sends rows to be ranked
    SELECT h FROM latest GROUP BY h HAVING count(*) > 1
),
ranked AS (SELECT * FROM latest WHERE h IN (SELECT h FROM contested)),
winners AS (
    SELECT backbone, weights_id, precision, image_id, max(filename) AS filename
    FROM ranked
    GROUP BY ALL
),
placed AS (
    SELECT * FROM latest WHERE h NOT IN (SELECT h FROM contested)
    UNION ALL
    SELECT * FROM ranked SEMI JOIN winners USING (backbone, weights_id, precision, image_id, filename)
)
SELECT image_id, backbone, weights_id, precision, x, y, map_version, placed, run_id
FROM placed
WHERE image_id IN (SELECT image_id FROM images);
