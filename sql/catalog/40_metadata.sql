-- metadata: the latest run's sidecar, its columns as given, plus path and image_id for joins.
-- @METADATA_PART@: that part's file name, a string literal catalog._fill writes in.
CREATE OR REPLACE VIEW metadata AS
SELECT * FROM read_parquet(lake_path('metadata/' || @METADATA_PART@));
