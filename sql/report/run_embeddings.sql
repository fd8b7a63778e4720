-- Embeddings of the ok images of one run, per backbone: a sample of at most $limit images, those
-- with the smallest image_ids (SHA-256: a uniform sample, and stable as the collection grows).
-- Embedding parts are written sorted by image_id, so the bound below lets the scan skip every row
-- group above the sample's largest id: the vectors of the rest are not read.
WITH chosen AS MATERIALIZED (
    SELECT DISTINCT image_id FROM run_files([$run_id]) WHERE status = 'ok'
    ORDER BY image_id
    LIMIT $limit
)
SELECT e.backbone, e.image_id, e.embedding
FROM embeddings AS e
WHERE e.image_id <= (SELECT max(image_id) FROM chosen)
    AND e.image_id IN (SELECT image_id FROM chosen)
ORDER BY e.backbone, e.image_id;
