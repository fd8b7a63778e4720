-- The lake's thumbnails of the images the report shows ($image_ids), JPEG bytes and size.
SELECT image_id, any_value(thumbnail) AS thumbnail
FROM thumbnails
WHERE list_contains($image_ids, image_id)
GROUP BY image_id;
