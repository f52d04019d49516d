-- requires: score_calibration
-- score_calibration: estimate vs exact synthetic truth (Spearman, Pearson, AUC aligned vs misaligned).
CREATE OR REPLACE VIEW score_calibration AS
SELECT * FROM read_parquet(:glob('score_calibration/*.parquet'), hive_partitioning = false);
