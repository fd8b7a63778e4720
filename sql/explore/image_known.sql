-- image_known: whether the current collection holds an image (one row if it does).
-- param image_id: VARCHAR
SELECT image_id FROM images WHERE image_id = $image_id LIMIT 1;
