"""Benchmarks that print figures (not timed tests): run ``python -m bench`` or one ``python -m bench.<name>``."""
