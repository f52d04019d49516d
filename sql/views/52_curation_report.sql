-- requires: curation_report
-- curation_report: per filter at one keep-fraction, the synthetic truth of its kept pairs (aligned share,
-- placeholder share, mean true log ratio, ...).
CREATE OR REPLACE VIEW curation_report AS
SELECT * FROM read_parquet(:glob('curation_report/*.parquet'), hive_partitioning = false);
