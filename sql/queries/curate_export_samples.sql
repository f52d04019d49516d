-- Kept rows of one subset with raw_pairs' pointers to their image bytes, in (drop, shard, offset) order so the
-- drops' tars are read front to back. $decisions, $raw_files as in curate_export_manifest. The caller checks
-- that every kept row found its raw_pairs row.
WITH kept AS (
    SELECT uid, drop FROM read_parquet($decisions, hive_partitioning = false) WHERE keep
)
SELECT r.uid, r.drop, r.shard, r.key, r.caption, r.url, r.width, r.height, r.image_sha256, r.image_format,
       r.tar_path, r."offset", r.size
FROM kept
JOIN read_parquet($raw_files, union_by_name = true, hive_partitioning = false) AS r USING (uid, drop)
ORDER BY r.drop, r.shard, r."offset", r.uid
