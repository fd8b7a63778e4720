-- color_run: per current image, the run that first recorded its file (files.recorded_by).
-- params: none
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, min(recorded_by) AS value
FROM images
GROUP BY image_id;
