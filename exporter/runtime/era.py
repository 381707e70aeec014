"""Which PlaceOS release a cluster runs (design §2, internals §0, §5.1, placeos-2026 §1).

Eras A-C follow ``platform_version`` (``GET /api/engine/v2/version``). Era D has no platform release of
its own yet, so it is recognised from what the cluster shows: rest-api #445 (51faa1a, 2026-08-12) took
search-ingest out of ``GET /api/engine/v2/cluster/versions`` (root.cr ``SERVICES``), so a C-or-later
cluster whose version list answers without search-ingest runs search in PostgreSQL. search-ingest down
in an era-C cluster looks the same (failing services are omitted): ``era: C`` in the settings decides.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from exporter.model.vocabulary import Era

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
SEARCH_INGEST = {"search-ingest", "search_ingest"}


def era_of(platform_version: str, services: Collection[str] | None = None) -> Era | None:
    """A for <= 1.2303.x, B for 2.2304.0 - 2.2403.x, C from 2.2404.1 (internals §0); D for a C-or-later
    cluster whose ``/cluster/versions`` lists services but no search-ingest."""
    match = _VERSION.match(platform_version.strip())
    if not match:
        return None
    major, release, patch = int(match[1]), int(match[2]), int(match[3] or 0)
    if major <= 1:
        return Era.A
    if (release, patch) < (2404, 1):
        return Era.B
    if services and not SEARCH_INGEST & {s.lower() for s in services}:
        return Era.D
    return Era.C
