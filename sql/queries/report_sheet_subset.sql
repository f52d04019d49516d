-- Rows of one contact sheet of a curated subset with a score column: its decisions ($decisions: uid, drop,
-- keep, reason) joined on (uid, drop) with the filter's column ($column, bound, from $score_files) and with raw_pairs'
-- caption and image pointer ($raw_files). NaN scores read as NULL. $side picks the rows and their order, ties
-- broken by uid:
--   kept_top       kept rows, highest score first
--   kept_near      kept rows, lowest score first (just above the threshold)
--   dropped_near   dropped rows with a score, highest first (just below the threshold)
--   dropped_bottom dropped rows, lowest score first (rows without a score last)
-- $n: the number of rows on the sheet (picked before raw_pairs is joined, so only they are looked up).
WITH d AS (
    SELECT uid, drop, keep, reason FROM read_parquet($decisions, hive_partitioning = false)
), s AS (
    SELECT uid, drop, CAST(COLUMNS([$column]) AS DOUBLE) AS v
    FROM read_parquet($score_files, union_by_name = true, hive_partitioning = false)
), j AS (
    SELECT d.uid, d.drop, d.keep, d.reason, CASE WHEN isnan(s.v) THEN NULL ELSE s.v END AS score
    FROM d LEFT JOIN s USING (uid, drop)
), pick AS (  -- a top-n (ORDER BY .. LIMIT), not a full sort
    SELECT *, CASE WHEN $side IN ('kept_top', 'dropped_near') THEN -score ELSE score END AS sort_key
    FROM j
    WHERE CASE $side
              WHEN 'kept_top'       THEN keep
              WHEN 'kept_near'      THEN keep
              WHEN 'dropped_near'   THEN NOT keep AND score IS NOT NULL
              WHEN 'dropped_bottom' THEN NOT keep
          END
    ORDER BY sort_key ASC NULLS LAST, uid
    LIMIT $n
)
SELECT p.uid, p.drop, p.keep, p.reason, p.score, r.caption, r.tar_path, r."offset", r.size, r.image_format
FROM pick AS p
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
ORDER BY p.sort_key ASC NULLS LAST, p.uid
