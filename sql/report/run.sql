-- The run a report is about: the given run_id, or the latest finished run.
SELECT *
FROM runs
WHERE ($run_id IS NULL AND status = 'finished') OR run_id = $run_id
ORDER BY started_at DESC
LIMIT 1;
