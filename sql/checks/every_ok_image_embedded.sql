-- Check: after the latest finished run, every 'ok' file of that run has an embedding from every
-- backbone that run used, with its weights and precision. Returns what is missing.
WITH latest AS (
    SELECT run_id, weights, precision
    FROM runs
    WHERE status = 'finished'
    ORDER BY started_at DESC
    LIMIT 1
),
used AS (
    SELECT key AS backbone, value ->> '$' AS weights_id, latest.precision
    FROM latest, json_each(latest.weights::JSON)
)
SELECT f.path, f.image_id, u.backbone
FROM files AS f
JOIN latest USING (run_id)
CROSS JOIN used AS u
WHERE f.status = 'ok'
  AND NOT EXISTS (
      SELECT 1 FROM embeddings AS e
      WHERE e.image_id = f.image_id
        AND e.backbone = u.backbone
        AND e.weights_id = u.weights_id
        AND e.precision = u.precision
  );
