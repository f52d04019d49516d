-- requires: ngram_analysis
-- ngram_coverage: per side (text/image), KL decile (0 = lowest), n and K: share of n-gram occurrences covered
-- by the decile's top-K n-grams.
CREATE OR REPLACE VIEW ngram_coverage AS
SELECT * FROM read_parquet(:glob('ngram_analysis/coverage.parquet'), hive_partitioning = false);
