-- Check: one dimension per backbone and weights, and every vector as long as its dim says.
-- Returns the offending rows; zero rows is a pass.
SELECT backbone, weights_id, NULL AS image_id, 'several dims: ' || string_agg(DISTINCT dim::VARCHAR, ', ') AS problem
FROM embeddings
GROUP BY ALL
HAVING count(DISTINCT dim) > 1
UNION ALL
SELECT backbone, weights_id, image_id, 'length ' || len(embedding) || ' <> dim ' || dim
FROM embeddings
WHERE len(embedding) <> dim;
