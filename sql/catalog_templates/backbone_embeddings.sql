-- embeddings_<backbone>: one backbone's rows of `embeddings`, with `embedding` as FLOAT[dim], so
-- DuckDB's array functions apply without a cast:
--   SELECT image_id, array_cosine_similarity(embedding, $query::FLOAT[1024]) FROM embeddings_mobilenet_v1
-- Made by the catalog build for each (backbone, dim) the lake holds. DuckDB binds no parameters
-- in a view, so catalog._fill writes three values in, quoted: VIEW (an identifier), BACKBONE (a
-- string literal) and DIM (an integer).
CREATE OR REPLACE VIEW @VIEW@ AS
SELECT image_id, backbone, weights_id, precision, dim, embedding::FLOAT[@DIM@] AS embedding, norm,
    run_id, created_at
FROM embeddings
WHERE backbone = @BACKBONE@;
