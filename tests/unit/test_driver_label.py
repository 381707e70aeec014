"""One driver, one label, in every state (seen by a user: labelled by its binary while running and by its
display name while failing to compile, so PlaceOSDriverDown resolved by the series vanishing).

The binary names are core's (core driver_store.cr ``executable_name`` @3351920 for era C; internals
§11.1 for A/B); the file name is what ``GET /api/engine/v2/drivers/:id`` returns.
"""

from __future__ import annotations

import pytest

from exporter.probes.drivers import driver_label, file_label


@pytest.mark.parametrize(
    ("binary", "file_name"),
    [
        ("drivers_place_display_a1b2c3d_amd64", "drivers/place/display.cr"),  # era C: <file>_<commit7>_<arch>
        ("drivers_place_display_a1b2c3d_arm64", "drivers/place/display.cr"),
        ("drivers_place_display_0123456789abcdef_driver-6zbexo1", "drivers/place/display.cr"),  # A/B: <id>
        ("drivers_lutron_quantum_v2_1_ffeedd0_amd64", "drivers/lutron/quantum.v2.1.cr"),
    ],
)
def test_running_and_failed_drivers_share_one_label(binary: str, file_name: str) -> None:
    assert driver_label(binary) == file_label(file_name)


def test_a_recompile_keeps_the_label() -> None:
    before = driver_label("drivers_place_display_a1b2c3d_amd64")
    after = driver_label("drivers_place_display_9f8e7d6_amd64")
    assert before == after == "drivers_place_display"
