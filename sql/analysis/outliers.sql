-- outliers: the images least like the rest of the collection, per backbone, scored by the mean
-- cosine similarity to their k nearest neighbours (lowest first).
-- param limit: INTEGER = 10  -- images per backbone
-- example: embedlake query outliers --param limit=20
-- (Each list is scored before the join to the current collection's paths, one row per image:
-- joining every neighbour row first took 2.3x as long at 1 M images; and scored by list_scores,
-- see there.) An image with lists in several groups of a backbone is scored over all their rows.
WITH scores AS (
    SELECT backbone, image_id, sum(similarity_sum) / sum(n) AS score
    FROM list_scores()
    GROUP BY backbone, image_id
),
lowest AS (
    SELECT backbone,
           unnest(min_by(struct_pack(image_id, path, score), (score, image_id),
                         greatest($limit, 1))) AS o  -- the lowest, ties by image_id
    FROM scores
    JOIN image_paths USING (image_id)
    GROUP BY backbone
)
SELECT backbone, o.path AS path, o.score AS score, o.image_id AS image_id
FROM lowest
WHERE $limit > 0
ORDER BY backbone, score, path;
