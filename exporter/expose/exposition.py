"""A faster encoder for the two exposition formats Prometheus asks for, byte-identical to prometheus-client's.

Why: a cluster with every probe is ~850 series, and prometheus-client's encoders spend ~80 % of a render
escaping label names and values character by character for every sample (7-8 ms per render here; bench
``metrics_latency --profile``). Our metric and label names are fixed by the contract and always valid
legacy names, and a label set repeats render after render (bounded reasons, probes, components), so
each label set is formatted once and then looked up. Values are formatted as prometheus-client's
``floatToGoString`` does. Output equals prometheus-client's for text 0.0.4/1.0.0 and OpenMetrics 1.x
with the underscores, allow-utf-8 and values escapings (tests/unit/test_exposition.py compares them on
full snapshots); anything else (dots escaping, OpenMetrics 2) goes to prometheus-client's encoders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from prometheus_client import exposition as text_exposition
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import CollectorRegistry

Encoder = Callable[[CollectorRegistry], bytes]

# Escapings that leave valid legacy names unchanged (dots rewrites "_" as "__").
_NAME_PRESERVING = {"underscores", "allow-utf-8", "values"}
_CACHE_MAX = 100_000  # label sets and names are bounded by the contract; this only guards the unexpected
_labels: dict[tuple[tuple[str, str], ...], str] = {}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")  # the text format moves these into gauges at the end
_LEGACY_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_valid_metric_names: set[str] = set()  # names already checked against their pattern
_valid_label_names: set[str] = set()


class _Unsupported(Exception):
    """Something our encoder does not reproduce exactly: prometheus-client's encoder takes over."""


def _checked(name: str, pattern: re.Pattern[str], valid: set[str]) -> str:
    """A name every supported escaping leaves unchanged (remembered in ``valid``), or _Unsupported."""
    if name not in valid:
        if not pattern.match(name):
            raise _Unsupported(name)
        if len(valid) >= _CACHE_MAX:
            valid.clear()
        valid.add(name)
    return name


def _metric_name(name: str) -> str:
    return _checked(name, _LEGACY_METRIC, _valid_metric_names)


def _label_name(name: str) -> str:
    return _checked(name, _LEGACY_LABEL, _valid_label_names)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_string(labels: dict[str, str]) -> str:
    """``{a="x",b="y"}`` sorted by name, values escaped as both formats do; cached per label set."""
    key = tuple(labels.items())
    found = _labels.get(key)
    if found is None:
        if len(_labels) >= _CACHE_MAX:
            _labels.clear()
        pairs = ",".join(f'{_label_name(k)}="{_escape(v)}"' for k, v in sorted(labels.items()))
        found = _labels[key] = "{" + pairs + "}" if pairs else ""
    return found


def _value(d: Any) -> str:
    """prometheus-client's ``floatToGoString``, with the common cases first."""
    d = float(d)
    if d == 0.0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    if d == 1.0:
        return "1.0"
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _line(sample: Any) -> str:
    if sample.timestamp is not None or sample.exemplar is not None or sample.native_histogram is not None:
        raise _Unsupported(sample.name)
    name = _metric_name(sample.name)
    return f"{name}{_label_string(sample.labels)} {_value(sample.value)}\n"


def encode_text(metrics: Iterable[Metric]) -> bytes:
    """Text format 0.0.4, as ``prometheus_client.exposition.generate_latest``."""
    out: list[str] = []
    for metric in metrics:
        name, kind = _metric_name(metric.name), metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        elif kind == "stateset":
            kind = "gauge"
        elif kind == "gaugehistogram":
            kind = "histogram"
        elif kind == "unknown":
            kind = "untyped"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        moved: dict[str, list[str]] = {}
        for sample in metric.samples:
            line = _line(sample)
            suffix = sample.name[len(metric.name) :] if sample.name.endswith(_OM_SUFFIXES) else ""
            if suffix in _OM_SUFFIXES and sample.name == metric.name + suffix:
                moved.setdefault(suffix, []).append(line)
            else:
                out.append(line)
        for suffix, lines in sorted(moved.items()):
            out.append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode()


def encode_openmetrics(metrics: Iterable[Metric]) -> bytes:
    """OpenMetrics 1.x, as ``prometheus_client.openmetrics.exposition.generate_latest``."""
    out: list[str] = []
    for metric in metrics:
        name = _metric_name(metric.name)
        out.append(f"# HELP {name} {_escape(metric.documentation)}\n# TYPE {name} {metric.type}\n")
        if metric.unit:
            out.append(f"# UNIT {name} {metric.unit}\n")
        out.extend(_line(sample) for sample in metric.samples)
    out.append("# EOF\n")
    return "".join(out).encode()


class _Collected:
    """Already collected families, for prometheus-client's encoders (they only call ``collect``)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _with_fallback(fast: Callable[[Iterable[Metric]], bytes], slow: Encoder) -> Encoder:
    def encode(registry: CollectorRegistry) -> bytes:
        metrics = list(registry.collect())
        try:
            return fast(metrics)
        except _Unsupported:
            return slow(_Collected(metrics))  # type: ignore[arg-type]

    return encode


def faster(encoder: Encoder) -> Encoder:
    """Our encoder where it is byte-identical to prometheus-client's ``encoder``, else ``encoder``."""
    func = getattr(encoder, "func", encoder)
    keywords = encoder.keywords if isinstance(encoder, partial) else {}
    if keywords.get("escaping", "underscores") not in _NAME_PRESERVING:
        return encoder
    if func is text_exposition.generate_latest:
        return _with_fallback(encode_text, encoder)
    if func is om_exposition.generate_latest and str(keywords.get("version", "1.0.0")).startswith("1."):
        return _with_fallback(encode_openmetrics, encoder)
    return encoder
