-- errors_summary: files that are not usable images, by error code, for one run.
-- param run_id: VARCHAR = NULL  -- a run (default: the latest)
-- example: embedlake query errors_summary --param run_id=20261126T032829Z-001ab7
SELECT f.error_code, count(*) AS files, sum(f.size_bytes) AS bytes,
       list(f.path ORDER BY f.path)[1:5] AS example_paths,
       any_value(f.error_message) AS example_message
FROM run_files([coalesce(
    $run_id, (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1))]) AS f
WHERE f.status = 'error'
GROUP BY f.error_code
ORDER BY files DESC;
