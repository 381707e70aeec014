"""Which PlaceOS release a cluster runs, from ``platform_version`` (design §2, internals §0, §5.1)."""

from __future__ import annotations

import re

from exporter.model.vocabulary import Era

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def era_of(platform_version: str) -> Era | None:
    """A for <= 1.2303.x, B for 2.2304.0 - 2.2403.x, C from 2.2404.1 (internals §0)."""
    match = _VERSION.match(platform_version.strip())
    if not match:
        return None
    major, release, patch = int(match[1]), int(match[2]), int(match[3] or 0)
    if major <= 1:
        return Era.A
    if (release, patch) < (2404, 1):
        return Era.B
    return Era.C
