-- Number of kept rows of one subset ($decisions: its decisions file).
SELECT count(*) FROM read_parquet($decisions, hive_partitioning = false) WHERE keep
