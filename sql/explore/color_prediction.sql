-- color_prediction: the group's probe's out-of-fold predicted label of a label column, per image.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param column: VARCHAR -- the probed label column
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, predicted_label AS value
FROM predictions
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
  AND "column" = $column;
