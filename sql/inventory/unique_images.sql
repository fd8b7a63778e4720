-- How many distinct images a run's 'ok' files hold (run_images.sql made the table).
SELECT count(*) AS n
FROM run_images;
