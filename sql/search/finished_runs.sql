-- finished_runs: the lake's finished runs, newest first: the params, weights (backbone ->
-- weights_id, JSON) and precision a query by example takes its group and decode from.
-- Parameters: none.
-- example: embedlake similar photo.jpg
SELECT params, weights, precision
FROM runs
WHERE status = 'finished'
ORDER BY started_at DESC
