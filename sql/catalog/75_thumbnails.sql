-- thumbnails: one small JPEG per image, made by the decode that embeds it (the image is decoded
-- once anyway): image_id, thumbnail (JPEG bytes, RGB, EXIF orientation applied, the long side
-- 128 pixels, never enlarged, quality 80), width and height (the thumbnail's), run_id (the run
-- that made it). One row per image_id: identical bytes are one image, and an image that has a
-- thumbnail is not decoded again for one. The explorer and the report show these, so neither
-- reads SOURCE (which may be remote or gone). A lake written before thumbnails reads as empty
-- until its next run, which makes the thumbnails its images lack.
CREATE OR REPLACE VIEW thumbnails AS
SELECT image_id, thumbnail, width, height, run_id
FROM read_parquet(lake_path('thumbnails/*.parquet'), union_by_name = true);
