-- query_vector: a stored image's vector under one backbone (its latest row, when several
-- (weights_id, precision) groups hold it), with the group it belongs to. Parts are sorted by
-- image_id, so DuckDB skips the row groups whose image_id min/max exclude the id.
-- param parts: VARCHAR  -- the embedding parts' glob (lake.location("embeddings", "*.parquet"))
-- param id: VARCHAR  -- the image_id
-- param backbone: VARCHAR  -- the backbone's name
-- example: embedlake nearest IMAGE_ID --backbone xception
SELECT weights_id, precision, embedding
FROM read_parquet($parts, union_by_name = true)
WHERE image_id = $id AND backbone = $backbone
ORDER BY created_at DESC
LIMIT 1
