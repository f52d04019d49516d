-- requires: curated_subsets
-- subset_summary: one row per subset: rule, pool, kept, dropped, threshold (k-th largest value for keep-fraction
-- filters, +inf when k = 0), k, the filter definition (JSON) and the lineage of the pool.
CREATE OR REPLACE VIEW subset_summary AS
SELECT * FROM read_parquet(:glob('curated_subsets/subset_summary.parquet'), hive_partitioning = false);
