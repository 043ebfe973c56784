"""``mq stats --html FILE``: one self-contained page (inline CSS and SVG, no script, no
external URL of any kind) with the terminal's charts: utilization per board and per pool,
grants by hour of day, and the table of figures. Every name from the lab is escaped."""

from __future__ import annotations

from html import escape

from .stats import HOURS, Figures, Report
from .stats_chart import HEAD, figure_cells, title

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #1d2430;
       background: #ffffff; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin-top: 1.8em; }
p.period { color: #555f6d; margin-top: 0; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font-size: 12px; fill: #1d2430; }
svg .track { fill: #e8ecf1; }
svg .bar { fill: #2f8f5b; }
svg .bar.pool { fill: #3466c2; }
svg .bar.hour { fill: #c2730f; }
svg .axis { stroke: #9aa4b1; stroke-width: 1; }
table { border-collapse: collapse; margin-top: 0.6em; }
th, td { padding: 0.25em 0.8em; text-align: right; border-bottom: 1px solid #e0e4ea; }
th:first-child, td:first-child { text-align: left; }
td.hours { text-align: left; }
"""

LABEL = 150  # px for the names left of the bars
WIDTH = 460  # px of a full (100%) bar
ROW = 24


def _e(text: str) -> str:
    return escape(text, quote=True)


def _label(name: str, limit: int = 22) -> str:
    """A name short enough for the space left of the bars (the whole name is in the bar's tooltip)."""
    return _e(name if len(name) <= limit else name[:limit - 1] + "\u2026")


def _utilization_svg(rows: list[tuple[str, float]], kind: str) -> str:
    height = ROW * len(rows) + 8
    parts = [f'<svg class="chart utilization {kind}" role="img" width="{LABEL + WIDTH + 70}" height="{height}" '
             f'viewBox="0 0 {LABEL + WIDTH + 70} {height}" aria-label="utilization per {kind}">']
    for index, (name, fraction) in enumerate(rows):
        y = 4 + index * ROW
        width = round(WIDTH * max(0.0, min(1.0, fraction)), 1)
        parts += [f'<text x="{LABEL - 8}" y="{y + 15}" text-anchor="end">{_label(name)}</text>',
                  f'<rect class="track" x="{LABEL}" y="{y + 3}" width="{WIDTH}" height="{ROW - 8}"/>',
                  f'<rect class="bar {kind}" data-name="{_e(name)}" data-value="{fraction:.4f}" x="{LABEL}" '
                  f'y="{y + 3}" width="{width}" height="{ROW - 8}"><title>{_e(name)}: {fraction:.1%}</title></rect>',
                  f'<text x="{LABEL + WIDTH + 8}" y="{y + 15}">{fraction:.1%}</text>']
    parts.append("</svg>")
    return "\n".join(parts)


def _hours_svg(hours: list[int]) -> str:
    step, tall, base = 28, 160, 180
    top = max(hours) or 1
    width = step * HOURS + 40
    parts = [f'<svg class="chart hours" role="img" width="{width}" height="{base + 24}" '
             f'viewBox="0 0 {width} {base + 24}" aria-label="grants by hour of day">',
             f'<line class="axis" x1="20" y1="{base}" x2="{width - 20}" y2="{base}"/>']
    for hour, count in enumerate(hours):
        x = 20 + hour * step
        height = round(tall * count / top, 1)
        parts += [f'<rect class="bar hour" data-hour="{hour}" data-value="{count}" x="{x + 3}" y="{base - height}" '
                  f'width="{step - 6}" height="{height}"><title>{hour:02d}h: {count} grants</title></rect>',
                  f'<text x="{x + step / 2}" y="{base + 16}" text-anchor="middle">{hour:02d}</text>']
        if count:
            parts.append(f'<text x="{x + step / 2}" y="{base - height - 4}" text-anchor="middle">{count}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(rows: list[tuple[str, Figures]], kind: str) -> str:
    head = [kind, *(["via pool"] if kind == "pool" else []), *HEAD]
    lines = [f'<table class="{kind}">', "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, figures in rows:
        cells = [_e(name), *([str(figures.via_pool)] if kind == "pool" else []), *map(_e, figure_cells(figures))]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells[:-1]) + f'<td class="hours">{cells[-1]}</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


def page(report: Report) -> str:
    """The whole page for a ``stats.Report``."""
    boards = [(f.name, f) for f in report.boards]
    pools = [(f.name, f) for f, _ in report.pools]
    body = [f"<h1>mq stats</h1>\n<p class=\"period\">{_e(title(report))}</p>",
            "<h2>Utilization per board</h2>", _utilization_svg([(n, f.utilization) for n, f in boards], "board")]
    if pools:
        body += ["<h2>Utilization per pool (mean of its members)</h2>",
                 _utilization_svg([(n, f.utilization) for n, f in pools], "pool")]
    body += ["<h2>Grants by hour of day (local time)</h2>", _hours_svg(list(report.hours)),
             "<h2>Boards</h2>", _table(boards, "board")]
    if pools:
        body += ["<h2>Pools</h2>", _table(pools, "pool")]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>mq stats: {_e(title(report))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


__all__ = ["page"]
