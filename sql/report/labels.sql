-- The sidecar's value of one column per image_id, as text (see the metadata_values macro).
SELECT image_id, value AS label FROM metadata_values($column);
