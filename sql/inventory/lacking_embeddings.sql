-- The images of a run's 'ok' files that lack an embedding of a backbone (with its weights) at a
-- precision: one row per (backbone, image_id) (run_images.sql made the table). The embeddings
-- are read by key alone.
-- param backbones: VARCHAR[]
-- param weights_ids: VARCHAR[]  -- each backbone's, in the same order
-- param precision: VARCHAR
WITH wanted AS (
    SELECT unnest($backbones) AS backbone, unnest($weights_ids) AS weights_id
),
stored AS (
    SELECT backbone, weights_id, image_id
    FROM embeddings
    WHERE precision = $precision
)
SELECT w.backbone, r.image_id
FROM run_images AS r
CROSS JOIN wanted AS w
WHERE NOT EXISTS (
    SELECT 1 FROM stored AS s
    WHERE s.image_id = r.image_id AND s.backbone = w.backbone AND s.weights_id = w.weights_id
)
ORDER BY w.backbone, r.image_id;
