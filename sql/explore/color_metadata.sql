-- color_metadata: one sidecar column's value per image (as text), for colouring the map by it
-- (label, split, ...). Rows: key (first 16 hex digits of image_id as UBIGINT), value.
-- @COLUMN@: the column, a quoted identifier written in by tasks/explore.py only after the name
-- was found among the metadata view's own columns (a scan of one column; metadata_values would
-- unpivot every column).
-- params: none
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, @COLUMN@::VARCHAR AS value
FROM metadata
WHERE image_id IS NOT NULL AND @COLUMN@ IS NOT NULL AND @COLUMN@::VARCHAR <> '';
