"""The committed reference docs match the code they are generated from."""

from exporter.docs import DOCS, ROOT


def test_generated_docs_are_current() -> None:
    for rel, make in DOCS.items():
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert committed == make(), f"{rel} is stale: run `python -m exporter.docs`"
