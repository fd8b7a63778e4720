-- embeddings_<backbone>: one backbone's rows of `embeddings`, with `embedding` as FLOAT[dim], so
-- DuckDB's array functions apply without a cast:
--   SELECT image_id, array_cosine_similarity(embedding, $query::FLOAT[1024]) FROM embeddings_mobilenet_v1
-- Made by the catalog build for each (backbone, dim) the lake holds; @VIEW@, @BACKBONE@ and @DIM@
-- are filled in there.
CREATE OR REPLACE VIEW @VIEW@ AS
SELECT image_id, backbone, weights_id, precision, dim, embedding::FLOAT[@DIM@] AS embedding, norm,
    run_id, created_at
FROM embeddings
WHERE backbone = '@BACKBONE@';
