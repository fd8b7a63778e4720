-- case_images: for the images of a review-queue case, in the case's order, a path each and the
-- decisions in force (e.g. exclude, relabel: cat, tag: blurry).
-- param image_ids: VARCHAR[]
WITH wanted AS (
    SELECT unnest($image_ids) AS image_id, generate_subscripts($image_ids, 1) AS n
)
SELECT w.image_id, p.path,
       (SELECT list(c.decision || coalesce(': ' || c.value, '') ORDER BY c.kind)
        FROM current_reviews AS c WHERE c.image_id = w.image_id) AS decisions
FROM wanted AS w
LEFT JOIN image_paths AS p USING (image_id)
ORDER BY w.n;
