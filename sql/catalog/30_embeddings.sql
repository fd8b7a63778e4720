-- embeddings: one row per (image_id, backbone, weights_id, precision); L2-normalised vectors.
-- Parts are written exactly once, but a view that dedupes costs little and guards the contract.
CREATE OR REPLACE VIEW embeddings AS
SELECT image_id, backbone, weights_id, precision, dim, embedding, norm, run_id, created_at
FROM read_parquet('@LAKE@/embeddings/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (
    PARTITION BY image_id, backbone, weights_id, precision ORDER BY created_at, run_id
) = 1;

-- embedding_rows: every stored row, before the view above removes duplicates (for checks).
CREATE OR REPLACE VIEW embedding_rows AS
SELECT * FROM read_parquet('@LAKE@/embeddings/*.parquet', union_by_name = true);
