-- Embeddings of the ok images of one run, per backbone (a deterministic sample of at most $limit
-- images), with their first path and the sidecar label when there is one.
WITH chosen AS (
    SELECT DISTINCT image_id FROM run_files([$run_id]) WHERE status = 'ok'
    ORDER BY hash(image_id)
    LIMIT $limit
)
SELECT e.backbone, e.image_id, e.embedding
FROM embeddings AS e
JOIN chosen USING (image_id)
ORDER BY e.backbone, e.image_id;
