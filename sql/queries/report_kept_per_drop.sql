-- Pool rows and kept rows per drop and subset, from the decisions of every curated subset ($files:
-- <warehouse>/curated_subsets/subset=<name>/part-*.parquet; hive partitioning supplies `subset`).
SELECT drop, subset, count(*) AS pool, count(*) FILTER (WHERE keep) AS kept
FROM read_parquet($files, hive_partitioning = true)
GROUP BY drop, subset
ORDER BY drop, subset
