-- requires: pair_scores
-- pair_scores: per pair CLIP score, s = a<u,v>, log r_img, log r_txt (self-normalised), model_id, reference_id.
CREATE OR REPLACE VIEW pair_scores AS
SELECT * FROM read_parquet(:glob('pair_scores/drop=*/*.parquet'), union_by_name = true, hive_partitioning = false);
