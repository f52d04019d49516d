-- Counts of one drop read back from the warehouse (used by the raw_pairs asset check).
SELECT
    (SELECT count(*) FROM read_parquet(?) ) AS kept,
    (SELECT count(DISTINCT uid) FROM read_parquet(?)) AS distinct_uids,
    (SELECT count(*) FROM read_parquet(?)) AS rejected;
