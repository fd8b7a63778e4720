-- A run's files in error, per error_code (its decode failures included once recorded).
-- param run_id: VARCHAR
SELECT error_code, count(*) AS n
FROM run_files([$run_id])
WHERE status = 'error'
GROUP BY error_code
ORDER BY error_code;
