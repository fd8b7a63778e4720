-- Check: each image_id has at most one thumbnail in the Parquet parts.
-- Returns the offending image_ids; zero rows is a pass.
SELECT image_id, count(*) AS copies
FROM thumbnails
GROUP BY ALL
HAVING count(*) > 1
