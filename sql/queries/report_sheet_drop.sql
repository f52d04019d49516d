-- Rows of one drop's contact sheet: $n rows of raw_pairs ($raw_files: that drop's files), the first by uid (a
-- deterministic sample), with caption and image pointer; score is NULL (see report_sheet_drop_scored).
SELECT uid, drop, CAST(NULL AS BOOLEAN) AS keep, CAST(NULL AS DOUBLE) AS score, caption, tar_path, "offset", size,
       image_format
FROM read_parquet($raw_files, union_by_name = true, hive_partitioning = false)
ORDER BY uid
LIMIT $n
