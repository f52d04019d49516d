-- requires: pair_scores
-- pair_scores: per pair CLIP score, s = a<u,v>, log r_img, log r_txt (self-normalised), model_id, reference_id.
CREATE OR REPLACE VIEW pair_scores AS
SELECT * FROM read_parquet(:warehouse || '/pair_scores/drop=*/*.parquet', union_by_name = true);
