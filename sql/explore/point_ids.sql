-- point_ids: the image_id and a path (the first by name) of the current images whose keys (the
-- first 16 hex digits of image_id) are given: what a click or a box selection on the map opens.
-- The keys come from the group's map, which holds current images only; `images` alone is read
-- (the map view costs twice its scan).
-- param prefixes: VARCHAR[] -- 16 hex digits each
SELECT image_id, min(path) AS path
FROM images
WHERE image_id[1:16] IN (SELECT unnest($prefixes))
GROUP BY image_id
ORDER BY image_id;
