-- Ground-truth quality of one subset's kept rows (synthetic world only): its decisions ($decisions) joined with
-- the truth files written beside the drops ($truth_files: <landing>/<drop>.truth.parquet). Aligned = neither
-- misaligned nor a placeholder. placeholders_kept = kept placeholders / all placeholders in the pool.
WITH d AS (
    SELECT uid, drop, keep FROM read_parquet($decisions, hive_partitioning = false)
), t AS (
    SELECT uid, drop, is_misaligned, is_placeholder, true_log_ratio, true_kl_text, true_kl_image
    FROM read_parquet($truth_files, union_by_name = true, hive_partitioning = false)
)
SELECT count(*)                                                                          AS pool_with_truth,
       count(*) FILTER (WHERE keep)                                                      AS kept,
       avg(CAST(NOT is_misaligned AND NOT is_placeholder AS DOUBLE)) FILTER (WHERE keep) AS aligned_share,
       avg(CAST(is_misaligned AS DOUBLE)) FILTER (WHERE keep)                            AS misaligned_share,
       avg(CAST(is_placeholder AS DOUBLE)) FILTER (WHERE keep)                           AS placeholder_share,
       count(*) FILTER (WHERE keep AND is_placeholder)
           / nullif(count(*) FILTER (WHERE is_placeholder), 0)                           AS placeholders_kept,
       avg(true_log_ratio) FILTER (WHERE keep)                                           AS mean_true_log_ratio,
       avg(true_kl_text) FILTER (WHERE keep)                                             AS mean_true_kl_text,
       avg(true_kl_image) FILTER (WHERE keep)                                            AS mean_true_kl_image
FROM d JOIN t USING (uid, drop)
