-- Embeddings of the ok images of some runs, per run and backbone: for each run a sample of at
-- most $limit images, those with the smallest image_ids (SHA-256: a uniform sample, and stable as
-- the collection grows). The runs' files are resolved together (the report's run and the one
-- before it: 1.6x faster than one at a time at 1 M images). Embedding parts are written sorted
-- by image_id, so the bound below lets the scan skip every row group above the samples' largest
-- id: the vectors of the rest are not read.
WITH chosen AS MATERIALIZED (
    SELECT run_id, unnest(min_by(image_id, image_id, $limit)) AS image_id
    FROM (SELECT DISTINCT run_id, image_id FROM run_files($run_ids) WHERE status = 'ok')
    GROUP BY run_id
)
SELECT c.run_id, e.backbone, e.image_id, e.embedding
FROM embeddings AS e
JOIN chosen AS c USING (image_id)
WHERE e.image_id <= (SELECT max(image_id) FROM chosen)
ORDER BY c.run_id, e.backbone, e.image_id;
