-- Decisions over an empty pool: no rows, the decisions schema.
SELECT CAST(NULL AS VARCHAR) AS uid, CAST(NULL AS VARCHAR) AS drop, CAST(NULL AS BOOLEAN) AS keep,
       CAST(NULL AS VARCHAR) AS reason
WHERE false
