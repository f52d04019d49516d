-- Size and lineage of the pool written by curate_pool ($pool: its Parquet file).
SELECT count(*)                      AS rows,
       sum(copies)                   AS rows_before_dedupe,
       list(DISTINCT drop)           AS drops,
       list(DISTINCT model_id)       AS model_ids,
       list(DISTINCT reference_id)   AS reference_ids
FROM read_parquet($pool)
