-- For some images of a run: the file a run decodes for each (the first of its 'ok' paths by
-- name) and its format.
-- param run_id: VARCHAR
-- param image_ids: VARCHAR[]
SELECT image_id, arg_min(path, path) AS path, arg_min(path_bytes, path) AS path_bytes,
    arg_min(format, path) AS format
FROM run_files([$run_id])
WHERE status = 'ok' AND image_id IN (SELECT unnest($image_ids))
GROUP BY image_id
ORDER BY image_id;
