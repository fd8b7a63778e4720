-- Given and out-of-fold predicted labels of one label column, per backbone (confusion matrices).
SELECT backbone, given_label, predicted_label, count(*) AS images
FROM predictions
WHERE "column" = $column
GROUP BY ALL
ORDER BY backbone, given_label, predicted_label;
