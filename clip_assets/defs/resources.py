"""Resources shared by every domain."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from clip_assets import config
from clip_assets.io import catalog


class HomeResource(dg.ConfigurableResource):
    """The data home (landing, warehouse, catalog, models, exports).

    Empty ``home`` means the default: $CLIP_ASSETS_HOME, else ``data/`` under the project checkout.
    """

    home: str = ""

    def path(self) -> Path:
        return config.data_home(self.home or None)

    def landing(self) -> Path:
        return config.landing_dir(self.path())

    def refresh_catalog(self) -> list[str]:
        """Re-create the DuckDB views (call from assets running in the ``duckdb`` pool)."""
        return catalog.refresh_views(self.path())
