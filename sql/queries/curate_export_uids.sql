-- uids of one subset's kept rows ($decisions: its decisions file), ascending.
SELECT uid FROM read_parquet($decisions, hive_partitioning = false) WHERE keep ORDER BY uid
