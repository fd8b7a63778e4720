-- map_rows: the rows of one map part: the placed images that were to place (`keys.todo`), with
-- the group's key, the map version and the run, sorted by image_id (narrow row-group min/max,
-- which point lookups skip by).
-- param backbone: VARCHAR; param weights_id: VARCHAR; param precision: VARCHAR
-- param map_version: INTEGER; param run_id: VARCHAR
-- example: con.execute(sql_text("map", "map_rows.sql"), {...}).to_arrow_table()
SELECT k.image_id, $backbone AS backbone, $weights_id AS weights_id, $precision AS precision,
    p.x, p.y, $map_version::INTEGER AS map_version, p.how AS placed, $run_id AS run_id
FROM placed AS p
JOIN keys AS k ON k.key = p.key
WHERE k.todo
ORDER BY k.image_id
