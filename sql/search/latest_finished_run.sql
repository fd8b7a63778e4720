-- latest_finished_run: the run_id of the lake's latest finished run (the run a review is made
-- on); no row before the first run finishes.
-- Parameters: none.
-- example: embedlake review IMAGE_ID --keep
SELECT run_id
FROM runs
WHERE status = 'finished'
ORDER BY started_at DESC
LIMIT 1
