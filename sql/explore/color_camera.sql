-- color_camera: per current image, its EXIF camera (make and model) where it has one.
-- params: none
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key,
       any_value(trim(concat_ws(' ', exif_make, exif_model))) AS value
FROM images
WHERE exif_make IS NOT NULL OR exif_model IS NOT NULL
GROUP BY image_id;
