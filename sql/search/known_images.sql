-- known_images: which of the given image_ids the current collection (`images`) holds: a review
-- names only these.
-- param image_ids: VARCHAR[]  -- the image_ids a review names
-- example: embedlake review IMAGE_ID --exclude
SELECT DISTINCT image_id
FROM images
WHERE image_id IN (SELECT unnest($image_ids))
