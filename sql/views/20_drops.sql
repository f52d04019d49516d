-- requires: raw_pairs rejected_pairs
-- drops: one row per ingested drop: rows seen = rows kept + rows rejected, shard count, top reject reason.
CREATE OR REPLACE VIEW drops AS
WITH kept AS (
    SELECT drop, count(*) AS kept, count(DISTINCT shard) AS shards FROM raw_pairs GROUP BY drop
), rej AS (
    SELECT drop, count(*) AS rejected, mode(reason) AS top_reason FROM rejected_pairs GROUP BY drop
)
SELECT coalesce(k.drop, r.drop)                                   AS drop,
       coalesce(k.kept, 0) + coalesce(r.rejected, 0)              AS seen,
       coalesce(k.kept, 0)                                        AS kept,
       coalesce(r.rejected, 0)                                    AS rejected,
       coalesce(k.shards, 0)                                      AS shards_with_rows,
       r.top_reason                                               AS top_reject_reason
FROM kept k FULL OUTER JOIN rej r ON k.drop = r.drop
ORDER BY 1;
