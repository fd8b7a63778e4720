-- The files of the listing (SOURCE's stats, registered by the run as `listing`) that a rerun
-- must open, in the listing's order: new since the previous run, or changed. A file is unchanged
-- when its size and mtime (ns) match its previous row (rsync's quick check: a file rewritten with
-- the same size and mtime goes unnoticed; --rehash reads everything) and that row is 'ok' or
-- has an error its bytes alone decide; only then is its previous row its row in this run.
-- param previous: VARCHAR  -- the previous run (previous_discovery.sql)
-- param stable_errors: VARCHAR[]  -- discover.STABLE_ERRORS
WITH previous AS (
    SELECT path, size_bytes, mtime_ns, status, error_code
    FROM run_files([$previous])
)
SELECT l.name, p.path IS NOT NULL AS known
FROM listing AS l
LEFT JOIN previous AS p ON p.path = l.path
WHERE p.path IS NULL
    OR l.mtime_ns IS NULL
    OR l.mtime_ns IS DISTINCT FROM p.mtime_ns
    OR l.size_bytes IS DISTINCT FROM p.size_bytes
    OR NOT coalesce(p.status = 'ok' OR list_contains($stable_errors, p.error_code), false)
ORDER BY l.seq;
