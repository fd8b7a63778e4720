-- image_files: the current collection's rows for one image (one per path): path, size, format,
-- pixels and EXIF, the run that recorded it and its source.
-- param image_id: VARCHAR
SELECT i.path, i.size_bytes, i.format, i.width, i.height, i.mode, i.exif_datetime, i.exif_make,
       i.exif_model, i.exif_orientation, i.exif_exposure_time, i.exif_f_number, i.exif_iso,
       i.exif_focal_length, i.gps_lat, i.gps_lon, i.run_id, i.recorded_by, r.source
FROM images AS i
LEFT JOIN runs AS r USING (run_id)
WHERE i.image_id = $image_id
ORDER BY i.path;
