-- embedded: the distinct image_ids one group holds in the embedding parts $parts (scanned by
-- DuckDB, which spills; the caller keeps them as the temporary table `embedded` for to_map).
-- param parts: VARCHAR[] -- the lake's embedding part paths
-- param backbone: VARCHAR; param weights_id: VARCHAR; param precision: VARCHAR
-- example: con.execute("CREATE TEMP TABLE embedded AS " + sql_text("map", "embedded.sql"), ...)
SELECT DISTINCT image_id
FROM read_parquet($parts, union_by_name = true)
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
