-- Whether the sidecar (the `metadata` view) has a column of this name.
-- param column: VARCHAR
SELECT count(*) > 0 AS found
FROM (DESCRIBE metadata)
WHERE column_name = $column;
