-- The distinct images of a run's 'ok' files, into a temporary table `run_images` of the read
-- connection: the embed plan's questions (lacking_embeddings, lacking_thumbnails, unique_images)
-- read it, so the run's files are resolved once for them, not once each (1.5 s each at 1 M
-- images). Ids alone: ~70 bytes an image in DuckDB's memory, under the read connection's 1GB at
-- 10 M. Nothing is written to the lake.
-- param run_id: VARCHAR
CREATE TEMP TABLE run_images AS
SELECT DISTINCT image_id
FROM run_files([$run_id])
WHERE status = 'ok' AND image_id IS NOT NULL;
