-- Counts of one decisions file ($path), read back for the kept + dropped = pool check.
SELECT count(*)                                             AS rows,
       count(*) FILTER (WHERE keep)                         AS kept,
       count(*) FILTER (WHERE NOT keep)                     AS dropped,
       count(DISTINCT uid)                                  AS distinct_uids,
       count(*) FILTER (WHERE NOT keep AND (reason IS NULL OR trim(reason) = '')) AS dropped_without_reason,
       count(*) FILTER (WHERE keep AND reason IS NOT NULL)  AS kept_with_reason
FROM read_parquet($path, hive_partitioning = false)
