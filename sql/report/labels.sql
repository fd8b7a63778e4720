-- The sidecar's value of one column per image_id, as text (NULL when there is none).
WITH long AS (
    UNPIVOT (
        -- every column but image_id (path included, so a sidecar of keys alone still unpivots)
        SELECT image_id, COLUMNS(* EXCLUDE (image_id))::VARCHAR FROM metadata
    )
    ON COLUMNS(* EXCLUDE (image_id)) INTO NAME field VALUE label
)
SELECT image_id, any_value(label) AS label
FROM long
WHERE field = $column AND image_id IS NOT NULL
GROUP BY image_id;
