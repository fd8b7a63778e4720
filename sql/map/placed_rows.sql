-- placed_rows: the positions of the images to place (image_id, x, y, how), sorted by image_id.
-- Parameters: none; reads the temporary tables `placed` and `keys`.
-- example: con.execute(sql_text("map", "placed_rows.sql")).to_arrow_table()
SELECT k.image_id, p.x, p.y, p.how
FROM placed AS p
JOIN keys AS k USING (key)
WHERE k.todo
ORDER BY k.image_id
