-- The source's latest run before this one whose discovery completed (no row: none): the run a
-- rerun compares SOURCE with.
-- param source: VARCHAR  -- runs.source
-- param run_id: VARCHAR  -- the run asking (excluded)
SELECT run_id
FROM discoveries
WHERE source = $source AND run_id <> $run_id
ORDER BY started_at DESC
LIMIT 1;
