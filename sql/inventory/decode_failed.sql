-- A run's 'ok' files of images whose pixels failed to decode: each gets a new version, an error.
-- param run_id: VARCHAR
-- param image_ids: VARCHAR[]
SELECT * EXCLUDE (recorded_by)
FROM run_files([$run_id])
WHERE status = 'ok' AND image_id IN (SELECT unnest($image_ids))
ORDER BY path;
