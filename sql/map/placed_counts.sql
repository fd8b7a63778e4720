-- placed_counts: how the images to place were placed ('fit', 'neighbors', 'fallback'), counted.
-- Parameters: none; reads the temporary tables `placed` and `keys`.
-- example: dict(con.execute(sql_text("map", "placed_counts.sql")).fetchall())
SELECT p.how, count(*) AS n
FROM placed AS p
JOIN keys AS k USING (key)
WHERE k.todo
GROUP BY p.how
