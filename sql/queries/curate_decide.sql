-- Decisions of one keep-fraction or threshold filter over the pool: keep = value >= $threshold (ties kept);
-- NaN and NULL are never kept (DuckDB orders NaN above every number, so it is excluded explicitly); $keep_none
-- (k = 0, or no number in the pool) keeps nothing. Every dropped row says which filter dropped it and why.
-- $pool, $column, $threshold, $keep_none, $name, $suffix (e.g. ' (keep top 25%)'), $none_reason.
SELECT uid, drop, keep,
       CASE WHEN keep          THEN NULL
            WHEN v IS NULL     THEN $name || ': ' || $column || ' is missing'
            WHEN isnan(v)      THEN $name || ': ' || $column || ' is NaN'
            WHEN $keep_none    THEN $name || ': ' || $none_reason
            ELSE printf('%s: %s %.6g < %.6g%s', $name, $column, v, $threshold, $suffix)
       END AS reason
FROM (
    SELECT uid, drop, v,
           coalesce(NOT $keep_none AND NOT isnan(v) AND v >= $threshold, false) AS keep
    FROM (SELECT uid, drop, CAST(COLUMNS([$column]) AS DOUBLE) AS v FROM read_parquet($pool))
)
ORDER BY uid
