-- The paths of the previous run's files that the listing (SOURCE now) lacks, by name.
-- param previous: VARCHAR  -- the previous run (previous_discovery.sql)
SELECT p.path
FROM run_files([$previous]) AS p
ANTI JOIN listing AS l ON l.path = p.path
ORDER BY p.path;
