-- runs: one row per run, at its latest stage (started -> finished | failed | aborted).
-- A run still 'started' is in progress; one killed without trace is marked 'aborted' by the next.
CREATE OR REPLACE VIEW runs AS
SELECT * EXCLUDE (stage)
FROM read_parquet('@LAKE@/runs/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (
    PARTITION BY run_id ORDER BY (stage = 'started') ASC, finished_at DESC NULLS LAST
) = 1;
