"""The PostgreSQL message bound follows the server's framing however TCP splits the stream."""

from __future__ import annotations

import struct

from exporter.probes.clients.bounded import MAX_BODY_BYTES
from exporter.probes.clients.postgres import _Framing


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


STREAM = message(b"R", struct.pack("!i", 0)) + message(b"S", b"server_version\x0016.1\x00") + message(b"Z", b"I")


def test_valid_messages_pass_whatever_the_chunking() -> None:
    for size in range(1, len(STREAM) + 1):
        framing = _Framing()
        chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
        assert all(framing.oversized(chunk) is None for chunk in chunks), size
        assert framing.header == b"" and framing.remaining == 0  # ended on a message boundary


def test_a_message_announced_over_the_bound_is_caught_even_with_its_header_split() -> None:
    huge = b"T" + struct.pack("!i", MAX_BODY_BYTES + 5)
    for cut in range(len(huge) + 1):
        framing = _Framing()
        first, second = STREAM + huge[:cut], huge[cut:] + b"x" * 100
        found = framing.oversized(first)
        assert (found if found is not None else framing.oversized(second)) == MAX_BODY_BYTES + 5


def test_garbage_reads_as_an_oversized_message() -> None:
    assert _Framing().oversized(b"HTTP/1.1 400 Bad Request\r\n\r\n") == int.from_bytes(b"TTP/", "big")
