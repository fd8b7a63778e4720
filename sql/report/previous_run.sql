-- The finished run before the given one (same lake), for "what changed".
SELECT run_id, started_at
FROM runs
WHERE status = 'finished' AND started_at < (SELECT started_at FROM runs WHERE run_id = $run_id)
ORDER BY started_at DESC
LIMIT 1;
