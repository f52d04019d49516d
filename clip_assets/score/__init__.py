"""Scoring without Dagster: one drop's density-ratio scores and KL statistics against the reference set (drop),
and their calibration against the synthetic world's exact truth (calibration)."""
