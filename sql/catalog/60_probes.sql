-- probes: per (backbone, weights_id, precision, column), the latest run's linear probe of a
-- --label-column on the stored embeddings: n_images, n_classes, n_set_aside (images in classes
-- too small to cross-validate), accuracy, balanced_accuracy, macro_f1 (out of fold), chance (the
-- majority-class rate), knn_accuracy (majority label of the graph neighbours), n_issues, macs and
-- ms_per_image (the backbone's cost, measured by the same run), n_reviewed_labels (images probed
-- on a reviewed label instead of the given one). `column` is a keyword: quote it.
CREATE OR REPLACE VIEW probes AS
SELECT *
FROM read_parquet(lake_path('probes/*.parquet'), union_by_name = true)
QUALIFY run_id = max(run_id) OVER (PARTITION BY backbone, weights_id, precision, "column");

-- predictions: one out-of-fold predicted label and its probability per image, from the same run.
CREATE OR REPLACE VIEW predictions AS
SELECT *
FROM read_parquet(lake_path('predictions/*.parquet'), union_by_name = true)
QUALIFY run_id = max(run_id) OVER (PARTITION BY backbone, weights_id, precision, "column");

-- label_issues: per image, its given label, its reviewed label (a review's relabel, which the
-- probe used in the given one's place), the label the out-of-fold probe suggests, cleanlab's
-- label_quality (0..1, low = probably wrong) and is_issue (confident learning's verdict).
CREATE OR REPLACE VIEW label_issues AS
SELECT *
FROM read_parquet(lake_path('label_issues/*.parquet'), union_by_name = true)
QUALIFY run_id = max(run_id) OVER (PARTITION BY backbone, weights_id, precision, "column");
