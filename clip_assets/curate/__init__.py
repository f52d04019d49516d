"""Curation without Dagster: filter configuration and its DuckDB engine (filters), tables and plots (report), and
what each curate asset computes (steps)."""
