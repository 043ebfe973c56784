"""``mq stats`` on stdout: bar charts drawn with rich on a terminal, plain aligned text otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mq.engine.core.errors import safe_text

from .history_view import span_text
from .render import duration
from .stats import HOURS, busiest, percentile

if TYPE_CHECKING:
    from rich.console import Console

    from .stats import Figures, Report

HOUR_BAR = 40  # characters of the longest hour-of-day bar
HEAD = ("grants", "util", "wait p50", "wait p90", "hold p50", "hold p90", "busiest hours")
NARROW_HEAD = ("grants", "util", "wait50", "wait90", "hold50", "hold90", "busiest")  # under WIDE columns
WIDE = 100  # a terminal narrower than this gets the short headers and hours (80 columns fit)


def _span(value: float | None) -> str:
    return "-" if value is None else span_text(value)


def _hours(figures: Figures) -> str:
    return " ".join(f"{h:02d}h" for h in busiest(figures.hours)) or "-"


def figure_cells(figures: Figures) -> list[str]:
    """grants, utilization, wait p50, p90, hold p50, p90 and busiest hours, as shown."""
    return [str(figures.grants), f"{figures.utilization:.1%}",
            _span(percentile(figures.waits, 0.5)), _span(percentile(figures.waits, 0.9)),
            _span(percentile(figures.holds, 0.5)), _span(percentile(figures.holds, 0.9)), _hours(figures)]


def title(report: Report) -> str:
    def day(when: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))

    zone = time.strftime("%Z %z", time.localtime(report.until))
    return f"{day(report.since)} to {day(report.until)} ({duration(report.period)}), local time {zone}"


def _align(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in rows]


def plain_lines(report: Report) -> list[str]:
    """Aligned text for a pipe or a file: the period, a table of boards, of pools, grants by hour."""
    lines = [f"period: {title(report)}", ""]
    rows = [["board", *HEAD]] + [[safe_text(f.name), *figure_cells(f)] for f in report.boards]
    lines += _align(rows, {1, 2, 3, 4, 5, 6})
    if report.pools:
        rows = [["pool", "via pool", *HEAD]]
        rows += [[safe_text(f.name), str(f.via_pool), *figure_cells(f)] for f, _ in report.pools]
        lines += ["", *_align(rows, {1, 2, 3, 4, 5, 6, 7})]
    top = max(report.hours) or 1
    lines += ["", "grants by hour of day (local time)"]
    for hour in range(HOURS):
        count = report.hours[hour]
        lines.append(f"{hour:02d}h {count:5d} {'#' * round(HOUR_BAR * count / top)}".rstrip())
    return lines


def _bar(fraction: float, width: int) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def _rich_table(report: Report, pools: bool, narrow: bool = False) -> object:
    """The figures, one row per board (or pool), as the plain table has them; ``narrow``: short
    headers and busiest hours as bare numbers, so that 80 columns hold a row on one line."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1 if narrow else 2, 0, 0))
    table.add_column("pool" if pools else "board", no_wrap=True)
    if pools:
        table.add_column("via" if narrow else "via pool", justify="right")
    for name in NARROW_HEAD if narrow else HEAD:
        table.add_column(name, justify="left" if name.startswith("busiest") else "right", no_wrap=True)
    rows = [(f, f.via_pool) for f, _ in report.pools] if pools else [(f, None) for f in report.boards]
    for figures, via in rows:
        cells = [safe_text(figures.name, 20 if narrow else 64), *([str(via)] if pools else []), *figure_cells(figures)]
        if narrow:
            cells[-1] = cells[-1].replace("h", "")
        table.add_row(*(Text(cell) for cell in cells))
    return table


def _rich_bars(rows: list[tuple[str, float]], width: int, style: str) -> object:
    """Utilization bars: a name, a bar as wide as the terminal allows, the percentage."""
    from rich.text import Text

    names = [safe_text(name, 24) for name, _ in rows]
    label = max((len(n) for n in names), default=0)
    bar = max(10, min(50, width - label - 10))
    text = Text()
    for name, (_, fraction) in zip(names, rows, strict=True):
        text.append(name.ljust(label) + "  ")
        text.append(_bar(fraction, bar), style=style)
        text.append(f" {fraction:6.1%}\n")
    text.rstrip()
    return text


EIGHTHS = " ▁▂▃▄▅▆▇█"
HOUR_ROWS = 8  # lines of the hour-of-day histogram


def hour_columns(hours: list[int], rows: int = HOUR_ROWS) -> list[str]:
    """A vertical histogram of grants by hour, 3 characters a column, top line first, then the
    hour numbers under their columns; the top line is labelled with the busiest hour's count."""
    top = max(hours) or 1
    eighths = [round(rows * 8 * count / top) for count in hours]
    label = len(str(top))
    lines = []
    for row in range(rows - 1, -1, -1):
        cells = [EIGHTHS[max(0, min(8, level - row * 8))] * 2 for level in eighths]
        axis = str(top).rjust(label) if row == rows - 1 else ("0".rjust(label) if row == 0 else " " * label)
        lines.append(f"{axis} │" + " ".join(cells))
    lines.append(" " * label + " └" + "".join(f"{h:02d} " for h in range(HOURS)).rstrip())
    return lines


def _rich_hours(report: Report) -> object:
    from rich.text import Text

    lines = hour_columns(list(report.hours))
    text = Text()
    for line in lines[:-1]:
        axis, bars = line.split("│", 1)
        text.append(axis + "│", style="dim")
        text.append(bars + "\n", style="cyan")
    text.append(lines[-1], style="dim")
    return text


def print_rich(report: Report, console: Console | None = None) -> None:
    """What ``plain_lines`` says, on a terminal: utilization bars per board and pool, the
    figures, and grants by hour of day as a histogram."""
    from rich.console import Console

    console = console or Console(highlight=False)
    console.print(f"[bold]mq stats[/bold]  {title(report)}", markup=True)
    console.print()
    console.print("[bold]utilization per board[/bold]", markup=True)
    console.print(_rich_bars([(f.name, f.utilization) for f in report.boards], console.width, "green"))
    if report.pools:
        console.print()
        console.print("[bold]utilization per pool[/bold] (mean of its members)", markup=True)
        console.print(_rich_bars([(f.name, f.utilization) for f, _ in report.pools], console.width, "blue"))
    console.print()
    narrow = console.width < WIDE
    console.print(_rich_table(report, pools=False, narrow=narrow))
    if report.pools:
        console.print()
        console.print(_rich_table(report, pools=True, narrow=narrow))
    console.print()
    console.print("[bold]grants by hour of day[/bold] (local time)", markup=True)
    console.print(_rich_hours(report))


__all__ = ["HEAD", "figure_cells", "hour_columns", "plain_lines", "print_rich", "title"]
