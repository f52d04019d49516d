-- requires: curated_subsets
-- curated_subsets: per subset, one row per pool row: uid, drop, keep, reason (why a dropped row was dropped),
-- subset. Grain: (subset, uid); kept + dropped = pool for every subset. The subset name comes from the file's
-- own folder (subset=<name>), never from folders above the warehouse.
CREATE OR REPLACE VIEW curated_subsets AS
SELECT * EXCLUDE (filename), regexp_extract(filename, 'subset=([^/]*)/[^/]*$', 1) AS subset
FROM read_parquet(:glob('curated_subsets/subset=*/*.parquet'), filename = true, hive_partitioning = false);
