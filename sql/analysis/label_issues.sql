-- label_issues: images whose given label the backbone's linear probe doubts most, lowest
-- label_quality first (cleanlab's confident learning on out-of-fold probabilities; needs a run
-- with --label-column). is_issue marks the ones confident learning flags. Where a review
-- relabelled an image (`embedlake review --relabel`), the probe judged reviewed_label, not the
-- given one; both are shown.
-- param column: VARCHAR = 'label'  -- the label column the run probed
-- param backbone: VARCHAR = NULL  -- one backbone, or every backbone
-- param limit: INTEGER = 20  -- rows per backbone
-- example: embedlake query label_issues --param column=species --param backbone=xception
SELECT backbone, path, given_label, reviewed_label, suggested_label, label_quality, is_issue,
       image_id, weights_id, precision
FROM label_issues
WHERE "column" = $column AND ($backbone IS NULL OR backbone = $backbone)
QUALIFY row_number() OVER (
    PARTITION BY backbone, weights_id, precision ORDER BY label_quality, path
) <= $limit
ORDER BY backbone, weights_id, precision, label_quality, path;
