-- place_fallback: a place for each image to place that no round placed (none of its stored
-- neighbours has a place: it has no neighbour list yet, or only unplaced neighbours): the
-- centroid of the placed points, offset by up to 5 % of their spread along each axis by a
-- jitter read from its id (its first and second 8 hex digits; 0.5 when not hex), so such images
-- neither stack on one point nor move between runs. They are marked 'fallback', never dropped.
-- Parameters: none; reads the temporary tables `keys` and `placed`.
-- example: con.execute("INSERT INTO placed " + sql_text("map", "place_fallback.sql"))
WITH centre AS (
    SELECT coalesce(avg(x), 0) AS cx, coalesce(avg(y), 0) AS cy,
        coalesce(nullif(stddev_pop(x), 0), 1) AS sx, coalesce(nullif(stddev_pop(y), 0), 1) AS sy
    FROM placed
),
jitter AS (
    SELECT key,
        coalesce(try_cast('0x' || substr(image_id, 1, 8) AS BIGINT) / 4294967296.0, 0.5) AS u,
        coalesce(try_cast('0x' || substr(image_id, 9, 8) AS BIGINT) / 4294967296.0, 0.5) AS v
    FROM keys AS k
    WHERE k.todo AND NOT EXISTS (SELECT 1 FROM placed AS p WHERE p.key = k.key)
)
SELECT j.key, (c.cx + 0.1 * c.sx * (j.u - 0.5))::FLOAT AS x,
    (c.cy + 0.1 * c.sy * (j.v - 0.5))::FLOAT AS y, 'fallback' AS how
FROM jitter AS j, centre AS c
