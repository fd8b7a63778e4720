-- exif_summary: cameras in the current collection, with their date range and GPS coverage.
-- param limit: INTEGER = 20  -- camera models to list
-- example: embedlake query exif_summary
SELECT coalesce(exif_make, '(no EXIF make)') AS make, coalesce(exif_model, '') AS model,
       count(*) AS images, min(exif_datetime) AS first_taken, max(exif_datetime) AS last_taken,
       count(gps_lat) AS with_gps, round(median(exif_iso)) AS median_iso
FROM images
GROUP BY ALL
ORDER BY images DESC
LIMIT $limit;
