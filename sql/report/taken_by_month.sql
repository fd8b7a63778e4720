-- Images of one run by the month their EXIF says they were taken.
SELECT date_trunc('month', exif_datetime) AS month, count(*) AS images
FROM files
WHERE run_id = $run_id AND status = 'ok' AND exif_datetime IS NOT NULL
GROUP BY ALL
ORDER BY month;
