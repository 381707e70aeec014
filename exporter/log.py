"""Logging: plain or JSON lines, and a filter that redacts every configured secret.

Probes log a state change once, not every failing run (anchors §8.3 item 6). Whatever reaches a log
record (messages, args, exception text) passes through the redactor, so a secret that slips into an
error message from a library still never reaches the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

LOGGER = "placeos_exporter"
# Credentials inside URLs and in query strings (api-key=, bearer_token=, password=, token=).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_QUERY_SECRETS = re.compile(r"(?P<key>(?:api[-_]key|bearer_token|access_token|password|token|secret)=)[^&\s\"']+", re.I)


class Redactor:
    """Replaces known secret values and URL/query credentials in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
        return _QUERY_SECRETS.sub(lambda m: f"{m['key']}***", text)


REDACT = Redactor()


class RedactingFilter(logging.Filter):
    """Renders the message, redacts it, and drops args so nothing unredacted is formatted later."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACT(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Keep logs to one line per event: the exception's text, redacted, without the traceback.
            exc = record.exc_info[1]
            record.msg = f"{record.msg}: {type(exc).__name__}: {REDACT(str(exc))}"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for key in ("cluster", "probe", "reason", "previous", "duration"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry)


def setup(fmt: str = "plain", level: str = "info", secrets: Iterable[str] = ()) -> logging.Logger:
    """Configure the exporter's logger (idempotent: reload calls it again with new secrets)."""
    REDACT.update(secrets)
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def get() -> logging.Logger:
    return logging.getLogger(LOGGER)
