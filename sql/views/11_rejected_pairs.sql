-- requires: rejected_pairs
-- rejected_pairs: every row ingestion did not keep, with its reason (see clip_assets/io/ingest.py).
CREATE OR REPLACE VIEW rejected_pairs AS
SELECT * FROM read_parquet(:glob('rejected_pairs/drop=*/*.parquet'), union_by_name = true, hive_partitioning = false);
