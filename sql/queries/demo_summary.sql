-- The demo's closing table: one row per drop with its counts.
SELECT drop, seen, kept, rejected, top_reject_reason FROM drops ORDER BY drop;
