-- Contact-sheet rows for the deciles of one score column ($column, bound) of $score_files: one row per uid (its
-- first drop by name, as in the curation pool), rows with a number only, cut into 10 deciles by (value, uid)
-- with ntile (decile 1 = lowest values). Per decile: its value range and size, and its first $n rows by uid (a
-- uid is a hash, so this is a deterministic sample) with raw_pairs' caption and image pointer ($raw_files).
WITH v AS (
    SELECT uid, drop, CAST(COLUMNS([$column]) AS DOUBLE) AS score
    FROM read_parquet($score_files, union_by_name = true, hive_partitioning = false)
    QUALIFY row_number() OVER (PARTITION BY uid ORDER BY drop) = 1
), q AS (
    SELECT *, ntile(10) OVER (ORDER BY score, uid) AS decile
    FROM v WHERE score IS NOT NULL AND NOT isnan(score)
), b AS (
    SELECT *, min(score) OVER (PARTITION BY decile) AS lo, max(score) OVER (PARTITION BY decile) AS hi,
           count(*) OVER (PARTITION BY decile) AS rows_in_decile,
           row_number() OVER (PARTITION BY decile ORDER BY uid) AS rn
    FROM q
    QUALIFY rn <= $n
)
SELECT b.decile, b.lo, b.hi, b.rows_in_decile, b.uid, b.drop, CAST(NULL AS BOOLEAN) AS keep, b.score,
       r.caption, r.tar_path, r."offset", r.size, r.image_format
FROM b
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
ORDER BY b.decile, b.rn
