-- image_reviews: every review of one image as appended (oldest first), each marked in_force
-- when it is the decision in force for its kind (current_reviews).
-- param image_id: VARCHAR
SELECT r.decision, r.value, r.label_column, r.note, r.who, r.made_at::VARCHAR AS made_at,
       r.run_id,
       EXISTS (
           SELECT 1 FROM current_reviews AS c
           WHERE c.image_id = r.image_id AND c.decision = r.decision
             AND c.made_at = r.made_at
             AND c.value IS NOT DISTINCT FROM r.value
       ) AS in_force
FROM reviews AS r
WHERE r.image_id = $image_id
ORDER BY r.made_at;
