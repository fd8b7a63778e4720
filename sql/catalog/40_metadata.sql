-- metadata: the latest run's sidecar, its columns as given, plus path and image_id for joins.
CREATE OR REPLACE VIEW metadata AS
SELECT * FROM read_parquet(lake_path('metadata/@METADATA_PART@'));
