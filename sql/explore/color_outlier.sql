-- color_outlier: the outlier score per image under the group: the mean cosine similarity to its
-- graph neighbours (low = unlike the rest; the `outliers` query's score). Numeric.
-- param backbone, weights_id, precision: VARCHAR -- the group
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, (similarity_sum / n)::DOUBLE AS value
FROM list_scores()
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision;
