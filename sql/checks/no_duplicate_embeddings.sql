-- Check: each (image_id, backbone, weights_id, precision) is stored once in the Parquet parts.
-- Returns the offending keys; zero rows is a pass.
SELECT image_id, backbone, weights_id, precision, count(*) AS copies
FROM embedding_rows
GROUP BY ALL
HAVING count(*) > 1;
