-- Rows of one contact sheet of a subset without a single score column (keep-all, all_of): $n of its rows with
-- keep = $keep (and why dropped), the first by uid (a uid is a hash, so this is a deterministic sample), with raw_pairs' caption
-- and image pointer. $decisions: the subset's decisions file; $raw_files: raw_pairs Parquet files.
SELECT d.uid, d.drop, d.keep, d.reason, CAST(NULL AS DOUBLE) AS score, r.caption, r.tar_path, r."offset", r.size,
       r.image_format
FROM read_parquet($decisions, hive_partitioning = false) AS d
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
WHERE d.keep = $keep
ORDER BY d.uid
LIMIT $n
