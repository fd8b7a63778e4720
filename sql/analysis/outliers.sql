-- outliers: the images least like the rest of the collection, per backbone, scored by the mean
-- cosine similarity to their k nearest neighbours (lowest first).
-- param limit: INTEGER = 10  -- images per backbone
-- example: embedlake query outliers --param limit=20
SELECT backbone, path, score, image_id
FROM (
    SELECT n.backbone, p.path, avg(n.similarity) AS score, n.image_id,
           row_number() OVER (PARTITION BY n.backbone ORDER BY avg(n.similarity)) AS position
    FROM neighbors AS n
    JOIN image_paths AS p USING (image_id)
    GROUP BY n.backbone, n.image_id, p.path
)
WHERE position <= $limit
ORDER BY backbone, score;
