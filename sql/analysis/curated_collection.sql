-- curated_collection: the collection a training job reads, as `embedlake export` writes it.
-- The current images minus those whose decision in force is exclude (current_reviews: the latest
-- keep or exclude wins), one row per path, with the sidecar's columns as given (label, split, ...
-- where it has them) and reviewed_label: the latest relabel of label_column (NULL where none).
-- param label_column: VARCHAR = 'label'  -- the label column whose reviewed labels are shown
-- example: embedlake query curated_collection --param label_column=species
WITH excluded AS (
    SELECT image_id FROM current_reviews WHERE decision = 'exclude'
)
SELECT i.path, i.image_id, m.* EXCLUDE (path, image_id), r.reviewed_label
FROM images AS i
LEFT JOIN metadata AS m ON m.path = i.path
LEFT JOIN reviewed_labels($label_column) AS r ON r.image_id = i.image_id
WHERE i.image_id NOT IN (SELECT image_id FROM excluded)
ORDER BY i.path;
