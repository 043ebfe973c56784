"""``--since`` of ``mq history`` and ``mq stats``: a span ago (``90m``, ``7d``) or a date and time."""

from __future__ import annotations

import re
import time
from datetime import datetime

from mq.settings.errors import BadInputError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?")
HELP = ("A span ago (90m, 12h, 7d, 2w, 1h30m, or plain seconds) or a date and time "
        "(2026-11-30, '2026-11-30 14:00', ISO 8601; local time unless it names its offset).")


def span_seconds(text: str) -> float | None:
    """``90m`` -> 5400.0, ``1h30m`` -> 5400.0, ``3600`` -> 3600.0; None when ``text`` is not a span."""
    if not _SPAN.fullmatch(text):
        return None
    return sum(float(number) * UNITS[unit or "s"] for number, unit in _PART.findall(text))


def _date(text: str) -> float:
    if not _DATE.fullmatch(text):
        raise ValueError(text)
    iso = text.replace(" ", "T", 1)
    if iso.endswith("Z"):
        iso = iso[:-1] + "+00:00"
    if re.search(r"[+-]\d{4}$", iso) and "T" in iso:
        iso = iso[:-2] + ":" + iso[-2:]
    when = datetime.fromisoformat(iso)
    return when.timestamp()  # a naive time is local time


def parse_since(text: str, now: float | None = None) -> float:
    """The Unix time ``--since TEXT`` names; BadInputError (exit 5) for anything else."""
    now = time.time() if now is None else now
    value = text.strip()
    span = span_seconds(value)
    if span is not None:
        if span <= 0:
            raise BadInputError(f"--since {text}: a span must be more than 0 seconds")
        return now - span
    try:
        when = _date(value)
    except (ValueError, OverflowError, OSError):
        raise BadInputError(f"--since {text}: not a span ago (90m, 12h, 7d, 2w) or a date "
                            "(2026-11-30, '2026-11-30 14:00', ISO 8601)") from None
    if when >= now:
        raise BadInputError(f"--since {text}: that is not in the past")
    return when


__all__ = ["HELP", "parse_since", "span_seconds"]
