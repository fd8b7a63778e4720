-- color_review: per image, its reviews in force in one word: exclude (it leaves the curated
-- collection) over relabel over keep over tag; images never reviewed have none.
-- params: none
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key,
       CASE
           WHEN bool_or(decision = 'exclude') THEN 'exclude'
           WHEN bool_or(decision = 'relabel') THEN 'relabel'
           WHEN bool_or(decision = 'keep') THEN 'keep'
           ELSE 'tag'
       END AS value
FROM current_reviews
GROUP BY image_id;
