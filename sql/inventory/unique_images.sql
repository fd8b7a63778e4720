-- How many distinct images a run's 'ok' files hold.
-- param run_id: VARCHAR
SELECT count(DISTINCT image_id) AS n
FROM run_files([$run_id])
WHERE status = 'ok' AND image_id IS NOT NULL;
