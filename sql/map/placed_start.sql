-- placed_start: the placement's known positions (`pos`: the fit's, or the latest version's) by
-- key, the table each round of sql/map/place_round.sql adds to.
-- Parameters: none; reads the temporary tables `pos` and `keys`.
-- example: con.execute("CREATE TEMP TABLE placed AS " + sql_text("map", "placed_start.sql"))
SELECT k.key, p.x::FLOAT AS x, p.y::FLOAT AS y, p.how
FROM pos AS p
JOIN keys AS k USING (image_id)
