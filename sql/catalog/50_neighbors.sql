-- neighbors: each image's top-k most similar images (rank 1 = the nearest other image), per
-- backbone, weights and precision. Rebuilt from all embeddings after each run.
CREATE OR REPLACE VIEW neighbors AS
SELECT backbone, weights_id, precision, image_id, neighbor_id, rank, similarity, method
FROM read_parquet('@LAKE@/neighbors/*.parquet', union_by_name = true);

-- backbone_cka: linear CKA between each pair of backbones over the images both embedded.
CREATE OR REPLACE VIEW backbone_cka AS
SELECT * FROM read_parquet('@LAKE@/agreement/*.parquet', union_by_name = true);

-- image_paths: one path per image_id in the current collection (the first by name), for labels.
CREATE OR REPLACE VIEW image_paths AS
SELECT image_id, min(path) AS path, count(*) AS n_paths
FROM images
GROUP BY image_id;
