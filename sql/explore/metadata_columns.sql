-- metadata_columns: the sidecar's column names (the metadata view's), for colouring by one.
-- params: none
SELECT column_name FROM (DESCRIBE metadata);
