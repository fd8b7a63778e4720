-- case_images: for the images of a review-queue case, in the case's order, a path each and the
-- decisions in force (e.g. exclude, relabel: cat, tag: blurry).
-- param image_ids: VARCHAR[]
WITH wanted AS (
    SELECT unnest($image_ids) AS image_id, generate_subscripts($image_ids, 1) AS n
),
paths AS (  -- these images' paths only (not image_paths: an aggregate of the collection)
    SELECT image_id, min(path) AS path
    FROM images
    WHERE image_id IN (SELECT image_id FROM wanted)
    GROUP BY image_id
)
SELECT w.image_id, p.path,
       (SELECT list(c.decision || coalesce(': ' || c.value, '') ORDER BY c.kind)
        FROM current_reviews AS c WHERE c.image_id = w.image_id) AS decisions
FROM wanted AS w
LEFT JOIN paths AS p USING (image_id)
ORDER BY w.n;
