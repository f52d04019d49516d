-- Rows of one scored drop's contact sheet: $n rows of raw_pairs ($raw_files: that drop's files), the first by uid
-- (a deterministic sample), with caption, image pointer and the score $column (bound) of $score_files.
WITH pick AS (
    SELECT uid, drop, caption, tar_path, "offset", size, image_format
    FROM read_parquet($raw_files, union_by_name = true, hive_partitioning = false)
    ORDER BY uid
    LIMIT $n
), s AS (
    SELECT uid, drop, CAST(COLUMNS([$column]) AS DOUBLE) AS v
    FROM read_parquet($score_files, union_by_name = true, hive_partitioning = false)
)
SELECT p.uid, p.drop, CAST(NULL AS BOOLEAN) AS keep, CASE WHEN isnan(s.v) THEN NULL ELSE s.v END AS score,
       p.caption, p.tar_path, p."offset", p.size, p.image_format
FROM pick AS p
LEFT JOIN s USING (uid, drop)
ORDER BY p.uid
