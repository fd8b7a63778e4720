-- Images of one run by the month their EXIF says they were taken.
SELECT date_trunc('month', exif_datetime) AS month, count(*) AS images
FROM run_files([$run_id])
WHERE status = 'ok' AND exif_datetime IS NOT NULL
GROUP BY ALL
ORDER BY month;
