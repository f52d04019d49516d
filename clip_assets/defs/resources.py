"""Resources shared by every domain."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import dagster as dg

from clip_assets import config
from clip_assets.io import catalog
from clip_assets.io.completeness import IncompletePartitionError, require_complete


class HomeResource(dg.ConfigurableResource):
    """The data home (landing, warehouse, catalog, models, exports).

    Empty ``home`` means the default: $CLIP_ASSETS_HOME, else ``data/`` under the project checkout.
    """

    home: str = ""

    def path(self) -> Path:
        return config.data_home(self.home or None)

    def landing(self) -> Path | str:
        """The landing area: a local folder, or a store URL (str) when CLIP_ASSETS_LANDING names one."""
        return config.landing_dir(self.path())

    def refresh_catalog(self) -> list[str]:
        """Re-create the DuckDB views (the catalog asset calls this, in the ``duckdb`` pool; ``catalog.connect``
        also rebuilds them when a versioned partition pointer has moved since the last build)."""
        return catalog.refresh_views(self.path())

    def require_complete(self, asset: dg.AssetKey, drops: Iterable[str], consumer: dg.AssetKey,
                         per: str | None = None) -> None:
        """Fail the step unless ``asset``'s partition of every drop holds exactly raw_pairs' uids."""
        try:
            require_complete(asset.to_user_string(), list(drops), consumer.to_user_string(), self.path(), per=per)
        except IncompletePartitionError as e:
            raise dg.Failure(str(e)) from None
