-- Histogram of one score column ($column, bound) of $files over one row per uid (its first drop by name, as in
-- the curation pool): $bins equal bins from the smallest to the largest finite value (the largest value falls in
-- the last bin); rows without a finite value are counted in the row whose bin is NULL.
WITH v AS (
    SELECT uid, CAST(COLUMNS([$column]) AS DOUBLE) AS x
    FROM read_parquet($files, union_by_name = true, hive_partitioning = false)
    QUALIFY row_number() OVER (PARTITION BY uid ORDER BY drop) = 1
), r AS (
    SELECT min(x) AS lo, max(x) AS hi FROM v WHERE isfinite(x)
)
SELECT CASE WHEN isfinite(v.x) THEN
           least(CAST(floor((v.x - r.lo) / greatest(r.hi - r.lo, 1e-300) * $bins) AS BIGINT), $bins - 1)
       END AS bin,
       any_value(r.lo) AS lo, any_value(r.hi) AS hi, count(*) AS n
FROM v, r
GROUP BY bin
ORDER BY bin NULLS LAST
