"""Which PlaceOS release a cluster runs (design §2, internals §0, §5.1, placeos-2026 §1).

Eras A-C follow ``platform_version`` (``GET /api/engine/v2/version``). Era D has no platform release of
its own yet (dev images report ``DEV``), so it is recognised from what rest-api #445 (51faa1a,
2026-08-12) changed, in order of trust:

1. Paging: ``GET /api/engine/v2/systems?limit=0`` links the next page at ``offset=0`` since #445
   (application.cr ``paginate_sql``: ``offset = range_end``) and at ``offset=1`` before it
   (``paginate_results``: ``range_end + 1``). Read-only, no rows; needs one system the key can see.
2. ``GET /api/engine/v2/cluster/versions`` no longer lists search-ingest (root.cr ``SERVICES``). An
   era-C cluster whose search-ingest is down looks the same (failing services are omitted), so this
   only decides where paging could not.
``era: C`` or ``era: D`` in the settings always wins.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from exporter.model.vocabulary import Era

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
SEARCH_INGEST = {"search-ingest", "search_ingest"}


def era_of(
    platform_version: str, services: Collection[str] | None = None, next_offset: int | None = None
) -> Era | None:
    """A for <= 1.2303.x, B for 2.2304.0 - 2.2403.x, C from 2.2404.1 (internals §0); a C-or-later (or
    unnumbered, ``DEV``) release is D when its paging says so, or, without paging, when ``/cluster/versions``
    lists services but no search-ingest. None when nothing tells."""
    match = _VERSION.match(platform_version.strip())
    if match:
        major, release, patch = int(match[1]), int(match[2]), int(match[3] or 0)
        if major <= 1:
            return Era.A
        if (release, patch) < (2404, 1):
            return Era.B
    if next_offset is not None:
        return Era.D if next_offset == 0 else (Era.C if match else None)
    if services and not SEARCH_INGEST & {s.lower() for s in services}:
        return Era.D
    return Era.C if match else None
