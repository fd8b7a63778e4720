-- color_source: the SOURCE (folder or URL) each current image comes from.
-- params: none
SELECT TRY_CAST('0x' || i.image_id[1:16] AS UBIGINT) AS key, any_value(r.source) AS value
FROM images AS i
JOIN runs AS r USING (run_id)
GROUP BY i.image_id;
