-- map: a 2-D place per image of the current collection, per backbone group: image_id, backbone,
-- weights_id, precision, x, y, map_version, placed ('fit': laid out by the fit; 'neighbors':
-- the similarity-weighted mean of its placed neighbours' places; 'fallback': no neighbour had a
-- place), run_id (the run, or reindex, that placed it). Only each group's latest map_version
-- (a new one at each fit: `embedlake reindex`, or once the images placed since the fit exceed
-- half of those it wrote) and, per image, its latest row (parts are named
-- <group>-<version>-<run_id>: by name, the latest last). See tasks/maps.py.
CREATE OR REPLACE VIEW map AS
WITH latest AS (
    SELECT *
    FROM read_parquet(lake_path('map/*.parquet'), union_by_name = true, filename = true)
    QUALIFY map_version = max(map_version) OVER (PARTITION BY backbone, weights_id, precision)
)
SELECT image_id, backbone, weights_id, precision, x, y, map_version, placed, run_id
FROM latest
WHERE image_id IN (SELECT image_id FROM images)
QUALIFY row_number() OVER (
    PARTITION BY backbone, weights_id, precision, image_id ORDER BY filename DESC
) = 1;
