-- The curation pool: every pair that has both pair_scores and kl_stats, ONE row per uid. A uid found in several
-- drops counts once, in the first drop by name; `copies` says in how many drops it was found.
-- $pair_files, $kl_files: lists of the Parquet files of the drops that have both tables.
SELECT p.*, k.* EXCLUDE (uid, drop, model_id, reference_id), count(*) OVER (PARTITION BY p.uid) AS copies
FROM read_parquet($pair_files, union_by_name = true, hive_partitioning = false) AS p
JOIN read_parquet($kl_files, union_by_name = true, hive_partitioning = false) AS k USING (uid, drop)
QUALIFY row_number() OVER (PARTITION BY p.uid ORDER BY p.drop) = 1
ORDER BY p.uid
