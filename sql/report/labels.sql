-- The sidecar's value of one column for some images (the report's sample), as text (see the
-- metadata_values macro).
-- param column: VARCHAR
-- param image_ids: VARCHAR[]
SELECT image_id, value AS label
FROM metadata_values($column)
WHERE image_id IN (SELECT unnest($image_ids));
