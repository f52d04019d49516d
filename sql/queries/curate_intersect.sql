-- Decisions of an all_of subset from its members' decision files ($files, in the configured order): kept when
-- every member keeps the row; a dropped row carries the reasons of every member that dropped it, joined by '; '.
SELECT uid, drop, bool_and(keep) AS keep,
       CASE WHEN bool_and(keep) THEN NULL
            ELSE string_agg(reason, '; ' ORDER BY list_position($files, filename)) END AS reason
FROM read_parquet($files, filename = true, hive_partitioning = false)
GROUP BY uid, drop
ORDER BY uid
