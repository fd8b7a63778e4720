-- current_paths: one path per image_id of the current collection (the image_paths view), the
-- images a query by example may answer with.
-- Parameters: none.
-- example: embedlake similar photo.jpg
SELECT image_id, path
FROM image_paths
