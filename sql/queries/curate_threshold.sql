-- Threshold of a keep-fraction filter: the k-th largest non-NaN value of one column over the WHOLE pool.
-- $pool: pool Parquet; $column: the score column (bound, never spliced); $k = floor(f * N) >= 1, computed
-- exactly in Python. With fewer than k numbers it is the smallest one; with none it is NULL.
SELECT min(v) AS threshold
FROM (
    SELECT v
    FROM (SELECT CAST(COLUMNS([$column]) AS DOUBLE) AS v FROM read_parquet($pool))
    WHERE v IS NOT NULL AND NOT isnan(v)
    ORDER BY v DESC
    LIMIT $k
)
