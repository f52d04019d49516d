-- The demo's curation lines: what each filter keeps, and how much of it is truly aligned.
SELECT filter, kept, round(kept_fraction, 3) AS kept_fraction, round(aligned_share, 3) AS aligned_share,
       round(placeholders_kept, 3) AS placeholders_kept, round(mean_true_log_ratio, 3) AS mean_true_log_ratio
FROM curation_report
ORDER BY aligned_share DESC;
