-- The images of a run's 'ok' files that have no thumbnail in the lake.
-- param run_id: VARCHAR
SELECT DISTINCT f.image_id
FROM run_files([$run_id]) AS f
ANTI JOIN thumbnails AS t ON t.image_id = f.image_id
WHERE f.status = 'ok' AND f.image_id IS NOT NULL
ORDER BY f.image_id;
