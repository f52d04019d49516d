"""I/O: drops (webdataset shards), the Parquet warehouse, the DuckDB catalog, exports."""
