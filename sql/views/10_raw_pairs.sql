-- requires: raw_pairs
-- raw_pairs: one row per kept image-text pair of every ingested drop.
-- Grain: (drop, uid). Image bytes stay in the drop's tar: tar_path + offset + size point at them.
CREATE OR REPLACE VIEW raw_pairs AS
SELECT * FROM read_parquet(:glob('raw_pairs/drop=*/*.parquet'), union_by_name = true, hive_partitioning = false);
