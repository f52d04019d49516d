-- requires: curated_subsets
-- curated_subsets: per subset, one row per pool row: uid, drop, keep, reason (why a dropped row was dropped),
-- subset. Grain: (subset, uid); kept + dropped = pool for every subset.
CREATE OR REPLACE VIEW curated_subsets AS
SELECT * FROM read_parquet(:warehouse || '/curated_subsets/subset=*/*.parquet', hive_partitioning = true);
