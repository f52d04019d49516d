-- Captions and KL of the pool for the N-gram analysis: kl_stats JOIN raw_pairs, one row per uid (first drop by
-- name, as in curate_pool), at most $max_rows rows: a pseudo-random sample ordered by hash(uid, $seed), the
-- same rows on every run with the same seed. $kl_files, $raw_files: Parquet files of the drops with both.
WITH pool AS (
    SELECT k.uid, k.drop, r.caption, k.text_kl, k.image_kl
    FROM read_parquet($kl_files, union_by_name = true, hive_partitioning = false) AS k
    JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
    QUALIFY row_number() OVER (PARTITION BY k.uid ORDER BY k.drop) = 1
)
SELECT uid, drop, caption, CAST(text_kl AS DOUBLE) AS text_kl, CAST(image_kl AS DOUBLE) AS image_kl,
       count(*) OVER () AS pool_rows
FROM pool
ORDER BY hash(uid, $seed), uid
LIMIT $max_rows
