-- requires: ngram_analysis
-- ngram_correlations: per side, Pearson r of KL with caption length, vocabulary size and type-token ratio.
CREATE OR REPLACE VIEW ngram_correlations AS
SELECT * FROM read_parquet(:glob('ngram_analysis/correlations.parquet'), hive_partitioning = false);
