-- latest_map: the positions in one group's latest map version: its parts $parts (the fit's part
-- first, then the placements of later runs), the latest row per image (by part name: version,
-- then run id).
-- param parts: VARCHAR[] -- the paths of the group's parts of its latest map_version
-- example: con.execute("CREATE TEMP TABLE pos AS " + sql_text("map", "latest_map.sql"), ...)
SELECT image_id, x, y, placed AS how
FROM read_parquet($parts, filename = true)
QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY filename DESC) = 1
