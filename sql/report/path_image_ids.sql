-- The image_id of each path the report shows without one ($paths), in the current collection.
SELECT path, min(image_id) AS image_id
FROM images
WHERE list_contains($paths, path)
GROUP BY path;
