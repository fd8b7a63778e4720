-- place_round: one round of placement from neighbours: each image with edges (`edges`: i, j, w)
-- not yet in `placed` (key, x, y, how) that has at least one placed neighbour goes to the
-- weighted mean of its placed neighbours' positions (weights: w, the clipped similarity). Sums
-- in DOUBLE, positions as FLOAT: the result does not depend on the order threads add in.
-- Parameters: none; reads the temporary tables `edges` and `placed`.
-- example: con.execute("INSERT INTO placed " + sql_text("map", "place_round.sql"))
SELECT e.i AS key,
    (sum(e.w * p.x) / sum(e.w))::FLOAT AS x,
    (sum(e.w * p.y) / sum(e.w))::FLOAT AS y,
    'neighbors' AS how
FROM edges AS e
JOIN placed AS p ON p.key = e.j
WHERE NOT EXISTS (SELECT 1 FROM placed AS q WHERE q.key = e.i)
GROUP BY e.i
