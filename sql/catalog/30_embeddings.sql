-- embeddings: one row per (image_id, backbone, weights_id, precision); L2-normalised vectors.
-- De-duplication is resolved when writing: a run embeds only the keys the lake lacks, and each
-- part is renamed into place whole, once (sql/checks/no_duplicate_embeddings.sql guards this).
-- So the view reads the parts as they are: no window over vectors, and count(*) reads footers.
-- `embedding` holds each backbone's own length here (FLOAT[]); the per-backbone views
-- `embeddings_<backbone>` (made by the catalog build, one per backbone the lake holds) expose it
-- as a fixed-size FLOAT[dim], for array_cosine_similarity and array_inner_product.
CREATE OR REPLACE VIEW embeddings AS
SELECT image_id, backbone, weights_id, precision, dim, embedding, norm, run_id, created_at
FROM read_parquet(lake_path('embeddings/*.parquet'), union_by_name = true);

-- embedding_rows: every stored row (the same rows; kept as the name checks and macros use).
CREATE OR REPLACE VIEW embedding_rows AS
SELECT * FROM embeddings;
