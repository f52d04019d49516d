"""Reports for curators: contact sheets of images, static HTML reports, Markdown summaries, plots with
thresholds, and what changed since the last materialization (see :mod:`clip_assets.report.build`)."""
