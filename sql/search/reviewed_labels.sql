-- reviewed_labels: per image, the label its latest relabel of one label column gave it (the
-- catalog's reviewed_labels macro): a run's probes and label issues use it over the given label.
-- param column: VARCHAR  -- the label column (--label-column)
-- example: embedlake run SOURCE --label-column label
SELECT image_id, reviewed_label
FROM reviewed_labels($column)
