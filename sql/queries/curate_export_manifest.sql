-- Manifest of one subset's kept rows: where each sample lives, its caption, and every score, sorted by uid.
-- $decisions: the subset's decisions file; $raw_files, $pair_files, $kl_files: Parquet files of every drop.
-- LEFT JOINs: a kept row is never lost; a missing raw_pairs row (not expected) would show as NULL shard/key.
WITH kept AS (
    SELECT uid, drop FROM read_parquet($decisions, hive_partitioning = false) WHERE keep
)
SELECT kept.uid, kept.drop, r.shard, r.key, r.caption, r.url,
       p.* EXCLUDE (uid, drop, model_id, reference_id),
       k.* EXCLUDE (uid, drop, model_id, reference_id),
       p.model_id, p.reference_id
FROM kept
LEFT JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
LEFT JOIN read_parquet($pair_files, union_by_name = true, hive_partitioning = false) AS p USING (uid, drop)
LEFT JOIN read_parquet($kl_files, union_by_name = true, hive_partitioning = false) AS k USING (uid, drop)
ORDER BY kept.uid
