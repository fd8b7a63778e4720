-- thumbnail: one image's thumbnail (JPEG bytes, written at decode time), if the lake has one.
-- param image_id: VARCHAR
SELECT thumbnail FROM thumbnails WHERE image_id = $image_id LIMIT 1;
