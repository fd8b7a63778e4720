-- Distinct ok images of one run that another run did not have ('added'), and the reverse: both
-- runs' files in one resolution (two took 1.9x as long at 1 M images).
WITH both_runs AS MATERIALIZED (
    SELECT image_id, bool_or(run_id = $run_id) AS now, bool_or(run_id = $previous_id) AS before
    FROM run_files([$run_id, $previous_id])
    WHERE status = 'ok'
    GROUP BY image_id
)
SELECT 'added' AS change, count(*) AS images FROM both_runs WHERE now AND NOT before
UNION ALL
SELECT 'removed', count(*) FROM both_runs WHERE before AND NOT now
UNION ALL
SELECT 'kept', count(*) FROM both_runs WHERE now AND before;
