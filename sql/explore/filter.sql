-- filter: the keys (first 16 hex digits of image_id, as UBIGINT) of the current images that
-- match a user's WHERE clause over `images` joined with its sidecar metadata (by path). The
-- clause is written in at @WHERE@ (its own lines, inside parentheses) and the whole statement
-- then goes through catalog.check_read_only, on a read-only connection under the explorer's
-- timeout and memory limit: the same sandbox as `embedlake sql`.
-- params: none (the clause is the user's SQL)
SELECT DISTINCT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key
FROM (
    SELECT i.*, m.* EXCLUDE (path, image_id)
    FROM images AS i
    LEFT JOIN metadata AS m ON m.path = i.path
) AS images
WHERE (
@WHERE@
);
