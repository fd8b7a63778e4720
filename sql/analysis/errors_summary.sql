-- errors_summary: files that are not usable images, by error code, for one run.
-- param run_id: VARCHAR = NULL  -- a run (default: the latest)
-- example: embedlake query errors_summary --param run_id=20261126T032829Z-001ab7
WITH wanted AS (
    SELECT coalesce($run_id, (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1)) AS run_id
),
run AS (  -- its files: as of its discovery, or the rows it wrote if it was killed during it
    SELECT path, status, error_code, error_message, size_bytes
    FROM run_files((SELECT list(run_id) FROM wanted))
    UNION ALL
    SELECT path, status, error_code, error_message, size_bytes
    FROM read_parquet(lake_path('files/*.parquet'), union_by_name = true)
    WHERE run_id = (SELECT run_id FROM wanted)
      AND run_id NOT IN (SELECT run_id FROM discoveries)
)
SELECT error_code, count(*) AS files, sum(size_bytes) AS bytes,
       list(path ORDER BY path)[1:5] AS example_paths,
       any_value(error_message) AS example_message
FROM run
WHERE status = 'error'
GROUP BY error_code
ORDER BY files DESC;
