-- A run's files as `files` rows (run_id: the run), by path: for its sidecar join and probes.
-- param run_id: VARCHAR
SELECT * EXCLUDE (recorded_by)
FROM run_files([$run_id])
ORDER BY path;
