-- list_rows: a group's neighbour rows (image_id, neighbor_id, rank, similarity), each with the
-- version of the part it came from; of the images in `wanted` only, unless $all. DuckDB reads a
-- part's other columns only for the rows whose image_id passes (an update's merge wants ~1 % of
-- a 10 M graph's lists: 2.6-3x faster than pyarrow's filtered scan there).
-- param files: VARCHAR[]  -- the group's neighbour parts (paths as the lake registers them)
-- param all: BOOLEAN  -- every image's rows (`wanted` is then empty)
-- Reads `part_versions` (part: the file's name, version) and `wanted` (image_id), Arrow tables
-- the caller registers.
-- example: embedlake run (the graph update's merge: graph.read_lists)
SELECT r.image_id, r.neighbor_id, r.rank, r.similarity, v.version
FROM read_parquet($files, filename = true, union_by_name = true) AS r
JOIN part_versions AS v ON v.part = parse_filename(r.filename)
WHERE $all OR r.image_id IN (SELECT image_id FROM wanted)
