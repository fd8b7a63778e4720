-- latest_lists: each image's current neighbour list in one group: the rows of its latest version,
-- ranked (nb: neighbour ids, sim: similarities), one row per image_id, by image_id.
-- Parameters: none. Reads `parts`, an Arrow table the caller registers: the group's neighbour
-- rows (image_id, neighbor_id, rank, similarity) with the version of the part each came from.
-- example: con.register("parts", rows); con.execute(sql_text("search", "latest_lists.sql"))
SELECT image_id,
       list(neighbor_id ORDER BY rank) AS nb,
       list(similarity ORDER BY rank) AS sim
FROM (FROM parts QUALIFY version = max(version) OVER (PARTITION BY image_id))
GROUP BY image_id
ORDER BY image_id
