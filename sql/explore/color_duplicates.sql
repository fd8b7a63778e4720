-- color_duplicates: a near-duplicate group per image under the group's graph: images joined by a
-- similarity >= threshold share the group named by the smallest image_id among them (one hop
-- from it), shown by that image's path. Images in no pair have none.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param threshold: DOUBLE -- minimum cosine similarity
WITH pairs AS (SELECT * FROM group_pairs($backbone, $weights_id, $precision, $threshold)),
member AS (
    SELECT a AS image_id, a AS head FROM pairs
    UNION ALL
    SELECT b, a FROM pairs
),
grouped AS (SELECT image_id, min(head) AS head FROM member GROUP BY image_id),
paths AS (  -- the heads' paths only (not image_paths: an aggregate of the collection)
    SELECT image_id, min(path) AS path
    FROM images
    WHERE image_id IN (SELECT head FROM grouped)
    GROUP BY image_id
)
SELECT TRY_CAST('0x' || g.image_id[1:16] AS UBIGINT) AS key,
       coalesce(p.path, g.head[1:12]) AS value
FROM grouped AS g
LEFT JOIN paths AS p ON p.image_id = g.head;
