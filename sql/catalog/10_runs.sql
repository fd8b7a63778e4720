-- runs: one row per run, at its latest stage: started -> discovered (the inventory is written)
-- -> embedded (the counts are known) -> finished | failed | aborted. A run still 'running' is
-- in progress; one killed without trace is marked 'aborted' by the next run. Lakes written before 0.2 may hold a run with both a finished
-- and a failed row: the later one wins.
CREATE OR REPLACE VIEW runs AS
SELECT * EXCLUDE (stage)
FROM read_parquet(lake_path('runs/*.parquet'), union_by_name = true)
QUALIFY row_number() OVER (
    PARTITION BY run_id
    ORDER BY CASE stage
            WHEN 'started' THEN 0 WHEN 'discovered' THEN 1 WHEN 'embedded' THEN 2 ELSE 3
        END DESC,
        finished_at DESC NULLS LAST
) = 1;
