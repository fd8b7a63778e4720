-- How many rows the current collection (`images`) holds, from the runs' own counts: the ok files
-- of each source's latest finished run (read without resolving any file).
SELECT coalesce(sum(n_ok), 0)::BIGINT AS n
FROM (
    SELECT n_ok
    FROM runs
    WHERE status = 'finished'
    QUALIFY row_number() OVER (PARTITION BY source ORDER BY started_at DESC) = 1
);
