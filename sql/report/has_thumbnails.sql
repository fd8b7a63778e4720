-- Whether the lake holds any thumbnail (a lake written before thumbnails holds none).
SELECT EXISTS (SELECT 1 FROM thumbnails) AS has_thumbnails;
