-- keys: an integer per image the placement handles (`todo`: to place; `pos`: already placed),
-- so the neighbour edges hold two integers and a weight, not two 64-character ids.
-- Parameters: none; reads the temporary tables `todo` (image_id) and `pos` (image_id, ...).
-- example: con.execute("CREATE TEMP TABLE keys AS " + sql_text("map", "keys.sql"))
SELECT image_id, row_number() OVER () AS key, bool_or(todo) AS todo
FROM (
    SELECT image_id, true AS todo FROM todo
    UNION ALL
    SELECT image_id, false FROM pos
)
GROUP BY image_id
