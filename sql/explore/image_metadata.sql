-- image_metadata: the sidecar's rows for one image, every column as given.
-- param image_id: VARCHAR
SELECT * FROM metadata WHERE image_id = $image_id ORDER BY path;
