-- outliers: the images least like the rest of the collection, per backbone, scored by the mean
-- cosine similarity to their k nearest neighbours (lowest first).
-- param limit: INTEGER = 10  -- images per backbone
-- example: embedlake query outliers --param limit=20
-- (Scored per list first, the lowest kept per backbone as they stream by, and only those looked
-- up by path: the graph's rows are never joined with the collection's paths.)
WITH scores AS (
    SELECT backbone, image_id, avg(similarity) AS score
    FROM neighbors
    WHERE image_id IN (SELECT image_id FROM images)
    GROUP BY backbone, image_id
),
lowest AS MATERIALIZED (
    SELECT backbone, unnest(min_by({'image_id': image_id, 'score': score}, score, $limit))
        AS found
    FROM scores
    GROUP BY backbone
),
named AS (
    SELECT image_id, min(path) AS path
    FROM images
    WHERE image_id IN (SELECT found.image_id FROM lowest)
    GROUP BY image_id
)
SELECT l.backbone, n.path, l.found.score AS score, l.found.image_id AS image_id
FROM lowest AS l
JOIN named AS n ON n.image_id = l.found.image_id
ORDER BY backbone, score, path;
