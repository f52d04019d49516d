-- Rows of one contact sheet of a subset without a single score column (keep-all, all_of): $n of its rows with
-- keep = $keep (with the reason a dropped row was dropped), the first by uid (a uid is a hash, so this is a
-- deterministic sample), then raw_pairs' caption and image pointer for those rows only.
-- $decisions: the subset's decisions file; $raw_files: raw_pairs Parquet files.
WITH pick AS (
    SELECT uid, drop, keep, reason
    FROM read_parquet($decisions, hive_partitioning = false)
    WHERE keep = $keep
    ORDER BY uid
    LIMIT $n
)
SELECT p.uid, p.drop, p.keep, p.reason, CAST(NULL AS DOUBLE) AS score, r.caption, r.tar_path, r."offset", r.size,
       r.image_format
FROM pick AS p
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
ORDER BY p.uid
