-- The latest probes of one label column, one row per backbone (cheapest first).
SELECT backbone, weights_id, precision, n_images, n_classes, n_set_aside, set_aside_labels,
       n_folds, accuracy, balanced_accuracy, macro_f1, chance, knn_accuracy, n_issues,
       ms_per_image, macs
FROM probes
WHERE "column" = $column
ORDER BY macs, backbone;
