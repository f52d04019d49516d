-- The demo's calibration lines: how well the estimates rank like the synthetic world's exact truth.
SELECT estimate, truth, round(spearman, 3) AS spearman, round(pearson, 3) AS pearson,
       round(auc_aligned, 3) AS auc_aligned
FROM score_calibration
WHERE estimate IN ('log_r_img', 'log_r_txt', 'clip_score', 'image_kl', 'text_kl', 'text_klr', 'text_dw')
ORDER BY truth, spearman DESC;
