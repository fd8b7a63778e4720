-- fit_sample: the images a fit lays out: the first $n of `todo` (the temporary table of the
-- images to place) in image_id order; ids are SHA-256 digests, so a uniform sample, and a
-- deterministic one.
-- param n: INTEGER -- maps.FIT_SAMPLE
-- example: con.sql(sql_text("map", "fit_sample.sql"), params={"n": 5000}).to_arrow_table()
SELECT image_id FROM todo ORDER BY image_id LIMIT $n
