-- image_labels: one image's probe results per backbone group and label column: its given and
-- reviewed label, the out-of-fold prediction and its probability, and the label issue's
-- suggested label and label_quality (low = probably wrong).
-- param image_id: VARCHAR
SELECT p.backbone, p.weights_id, p.precision, p."column", p.given_label, p.reviewed_label,
       p.predicted_label, p.probability, li.suggested_label, li.label_quality, li.is_issue
FROM predictions AS p
LEFT JOIN label_issues AS li
    USING (backbone, weights_id, precision, "column", image_id)
WHERE p.image_id = $image_id
ORDER BY p."column", p.backbone, p.weights_id, p.precision;
