"""placeos-exporter: tells PlaceOS operators which backend failed and what that breaks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("placeos-exporter")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
