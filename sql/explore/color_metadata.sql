-- color_metadata: a sidecar column's value per image (as text), for colouring the map by it
-- (label, split, ...). Rows: key (first 16 hex digits of image_id as UBIGINT), value.
-- param column: VARCHAR -- the sidecar column
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, value
FROM metadata_values($column)
WHERE value IS NOT NULL AND value <> '';
