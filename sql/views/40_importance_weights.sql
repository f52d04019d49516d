-- requires: importance_weights
-- importance_weights: per image and target prompt, w = exp(a' <u_x, v_prompt> + b') from the frozen contrastive model.
-- Grain: (drop, uid, prompt). Columns: uid, prompt, log_weight, weight, weight_shift, a_prime, b_prime, model_id, drop.
-- The files hold no drop column: it comes from the partition's own folder (drop=<key>), never from folders above.
CREATE OR REPLACE VIEW importance_weights AS
SELECT * EXCLUDE (filename), regexp_extract(filename, 'drop=([^/]*)/[^/]*$', 1) AS drop
FROM read_parquet(:glob('importance_weights/drop=*/*.parquet'), union_by_name = true, filename = true,
                  hive_partitioning = false);
