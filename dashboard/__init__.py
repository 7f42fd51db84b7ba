"""The static research dashboard: `build_site` writes one index.html (data embedded, no network at
view time) from the ledger and resources.md; `serve` shows a built site on a local HTTP server."""

from dashboard.build import build_site
from dashboard.serve import serve

__all__ = ["build_site", "serve"]
