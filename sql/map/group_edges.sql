-- group_edges: the current neighbour lists (per image, its latest version's list, as the
-- `neighbors` view resolves them) of the images to place (`keys.todo`), read from the group's
-- neighbour parts $parts, as (i, j, w): the image's key, its neighbour's key, and a weight, the
-- similarity clipped at 1e-6 (a neighbour never pushes an image away). Neighbours the
-- placement does not know (no key: neither placed nor to place) are dropped after the list's
-- version is settled.
-- param parts: VARCHAR[] -- the group's neighbour part paths
-- example: con.execute("CREATE TEMP TABLE edges AS " + sql_text("map", "group_edges.sql"), ...)
WITH rows AS (
    SELECT a.key AS i, b.key AS j,
        greatest(coalesce(r.similarity, 0), 1e-6)::DOUBLE AS w,
        coalesce(try_cast(regexp_extract(r.filename, '-(\d{8})\.parquet$', 1) AS INTEGER), 0)
            AS version
    FROM read_parquet($parts, union_by_name = true, filename = true) AS r
    JOIN keys AS a ON a.image_id = r.image_id AND a.todo
    LEFT JOIN keys AS b ON b.image_id = r.neighbor_id
)
SELECT i, j, w
FROM rows
QUALIFY version = max(version) OVER (PARTITION BY i) AND j IS NOT NULL
