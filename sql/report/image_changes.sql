-- Distinct ok images of one run that another run did not have ('added'), and the reverse.
WITH current AS (SELECT DISTINCT image_id FROM run_files([$run_id]) WHERE status = 'ok'),
previous AS (SELECT DISTINCT image_id FROM run_files([$previous_id]) WHERE status = 'ok')
SELECT 'added' AS change, count(*) AS images FROM current WHERE image_id NOT IN (SELECT * FROM previous)
UNION ALL
SELECT 'removed', count(*) FROM previous WHERE image_id NOT IN (SELECT * FROM current)
UNION ALL
SELECT 'kept', count(*) FROM current WHERE image_id IN (SELECT * FROM previous);
