-- to_map: the group's images to place: its current images that have an embedding (`current`
-- and `embedded`, image_id columns the caller registers) and, unless $all, no row in the
-- group's latest map (the temporary table `pos`). Sorted by image_id (a SHA-256, so a uniform
-- order: the first N are the fit's deterministic sample).
-- param all: BOOLEAN -- every image (a refit), not only the unmapped ones
-- example: con.execute(sql_text("map", "to_map.sql"), {"all": False}).to_arrow_table()
SELECT DISTINCT c.image_id
FROM current AS c
SEMI JOIN embedded AS e ON e.image_id = c.image_id
WHERE $all OR NOT EXISTS (SELECT 1 FROM pos AS m WHERE m.image_id = c.image_id)
ORDER BY c.image_id
