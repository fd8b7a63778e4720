-- The files rows of a source's latest run before this one whose discovery completed: the rows an
-- unchanged file's row is reused from, and the paths a file missing now was gone from.
-- param source: VARCHAR  -- runs.source
-- param run_id: VARCHAR  -- the run asking (excluded)
SELECT f.* EXCLUDE (run_id, recorded_by)
FROM run_files([(
    SELECT run_id
    FROM discoveries
    WHERE source = $source AND run_id <> $run_id
    ORDER BY started_at DESC
    LIMIT 1
)]) AS f;
