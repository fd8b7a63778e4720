-- The images of a run's 'ok' files that have no thumbnail in the lake (run_images.sql made the
-- table).
SELECT r.image_id
FROM run_images AS r
ANTI JOIN thumbnails AS t ON t.image_id = r.image_id
ORDER BY r.image_id;
