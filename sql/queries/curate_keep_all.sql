-- Decisions of the keep-all (no filter) baseline: every pool row kept. $pool: pool Parquet.
SELECT uid, drop, true AS keep, CAST(NULL AS VARCHAR) AS reason
FROM read_parquet($pool)
ORDER BY uid
