-- requires: kl_stats
-- kl_stats: per image (image_*) and per caption (text_*) D_KL, D_KLR, D_C, D_W against the reference set.
CREATE OR REPLACE VIEW kl_stats AS
SELECT * FROM read_parquet(:glob('kl_stats/drop=*/*.parquet'), union_by_name = true, hive_partitioning = false);
