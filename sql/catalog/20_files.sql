-- files: one row per discovered file per run, 'ok' or 'error' with an error_code.
CREATE OR REPLACE VIEW files AS
SELECT * FROM read_parquet('@LAKE@/files/*.parquet', union_by_name = true);

-- images: the current collection, the latest files row per path, where that row is 'ok'.
CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (run_started_at)
FROM (
    SELECT f.*, r.started_at AS run_started_at
    FROM files AS f
    JOIN runs AS r USING (run_id)
    QUALIFY row_number() OVER (PARTITION BY f.path ORDER BY r.started_at DESC) = 1
)
WHERE status = 'ok';
