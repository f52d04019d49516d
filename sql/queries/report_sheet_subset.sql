-- Rows of one contact sheet of a curated subset with a score column: its decisions ($decisions: uid, drop,
-- keep, reason) joined on (uid, drop) with the filter's column ($column, bound, from $score_files) and with raw_pairs'
-- caption and image pointer ($raw_files). NaN scores read as NULL. $side picks the rows and their order, ties
-- broken by uid:
--   kept_top       kept rows, highest score first
--   kept_near      kept rows, lowest score first (just above the threshold)
--   dropped_near   dropped rows with a score, highest first (just below the threshold)
--   dropped_bottom dropped rows, lowest score first (rows without a score last)
-- $n: the number of rows on the sheet.
WITH d AS (
    SELECT uid, drop, keep, reason FROM read_parquet($decisions, hive_partitioning = false)
), s AS (
    SELECT uid, drop, CAST(COLUMNS([$column]) AS DOUBLE) AS v
    FROM read_parquet($score_files, union_by_name = true, hive_partitioning = false)
), j AS (
    SELECT d.uid, d.drop, d.keep, d.reason, CASE WHEN isnan(s.v) THEN NULL ELSE s.v END AS score
    FROM d LEFT JOIN s USING (uid, drop)
)
SELECT j.uid, j.drop, j.keep, j.reason, j.score, r.caption, r.tar_path, r."offset", r.size, r.image_format
FROM j
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
WHERE CASE $side
          WHEN 'kept_top'       THEN j.keep
          WHEN 'kept_near'      THEN j.keep
          WHEN 'dropped_near'   THEN NOT j.keep AND j.score IS NOT NULL
          WHEN 'dropped_bottom' THEN NOT j.keep
      END
ORDER BY CASE WHEN $side IN ('kept_top', 'dropped_near') THEN -j.score ELSE j.score END ASC NULLS LAST, j.uid
LIMIT $n
