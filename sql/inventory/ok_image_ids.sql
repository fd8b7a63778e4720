-- The distinct images of a run's 'ok' files, by image_id.
-- param run_id: VARCHAR
SELECT DISTINCT image_id
FROM run_files([$run_id])
WHERE status = 'ok' AND image_id IS NOT NULL
ORDER BY image_id;
