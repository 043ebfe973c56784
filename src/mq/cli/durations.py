"""Durations where people think in durations: ``-T``, ``-d`` and ``--timeout`` take ``90``,
``90s``, ``30m``, ``2h``, ``1h30m`` (a plain number is seconds, so every ``mq.sh`` command line
keeps its meaning; ``-1`` and ``inf`` stay what they were)."""

from __future__ import annotations

import math
from typing import Any, Optional

import click

FORMS = "90, 90s, 30m, 2h or 1h30m"


class Duration(click.ParamType):  # type: ignore[type-arg]  # (generic in newer click only)
    """A duration in seconds: a number (``-1``, ``inf`` and the rest as before), or a span."""

    name = "duration"

    def __init__(self, integer: bool = False) -> None:
        self.integer = integer

    def get_metavar(self, param: click.Parameter, ctx: Optional[click.Context] = None) -> str:
        return "DURATION"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if self.integer and text.lstrip("-").isdigit():
            return int(text)  # exactly as typed (a huge -T is named as the user wrote it)
        try:
            seconds: Optional[float] = float(text)  # a plain number: seconds (mq.sh's)
        except ValueError:
            from mq.client.since import span_seconds

            seconds = span_seconds(text)
        if seconds is None:
            self.fail(f"{text!r} is not a duration ({FORMS})", param, ctx)
        if not self.integer:
            return seconds
        if math.isnan(seconds) or not float(seconds).is_integer():
            self.fail(f"{text!r} is not a whole number of seconds", param, ctx)
        return int(seconds)


def as_period_and_retries(budget: Optional[float], period: float, retries: int) -> tuple[float, int]:
    """``--timeout`` as the ``-w``/``-t`` pair the wait takes (``-w`` x ``-t`` is its budget):
    0 one try, -1 or inf for ever, else one period of that length. Given with ``-w`` or ``-t``:
    a usage error (which one was meant?)."""
    from mq.settings.errors import UsageError

    if budget is None:
        return period, retries
    if (period, retries) != (8.0, -1):
        raise UsageError("--timeout replaces -w and -t: give one or the other")
    if math.isnan(budget):
        raise UsageError("--timeout nan: not a duration")
    if budget < 0 or budget == float("inf"):
        return period, -1
    return (period, 0) if budget == 0 else (budget, 1)


SECONDS = Duration()
WHOLE_SECONDS = Duration(integer=True)

__all__ = ["FORMS", "SECONDS", "WHOLE_SECONDS", "Duration", "as_period_and_retries"]
