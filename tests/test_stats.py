"""``mq stats``: figures per board and pool from the audit log, on a terminal (rich bar
charts), as plain text, as ``stats`` JSON and as a self-contained HTML page, which headless
Chromium renders (its SVG bars in the DOM, and on a screenshot in their colours)."""

from __future__ import annotations

import calendar
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pexpect
import pytest

from conftest import LabFixture, run_mq
from mq.views.stats import compute, holds, percentile, report_json

T0 = float(calendar.timegm((2026, 11, 18, 10, 0, 0)))  # TZ is UTC in the tests
PERIOD = 36000.0  # ten hours
HOSTILE = "<script>alert(1)</script>"
STATS_KEYS = {"since", "until", "period", "timezone", "boards", "pools", "hours"}
FIGURE_KEYS = {"grants", "utilization", "held", "wait_p50", "wait_p90", "hold_p50", "hold_p90", "busiest_hours",
               "hours"}
BOARD_KEYS = {"board"} | FIGURE_KEYS
POOL_KEYS = {"pool", "members", "via_pool"} | FIGURE_KEYS
BOARDS = ["b1", "b2", "b3", "solo", "x86a", "x86b"]
POOLS = {"trio": ("b1", "b2", "b3"), "pair": ("b3", "solo"), "x86": ("x86a", "x86b")}


def grant(t: float, board: str, number: int, waited: float, pool: str = "") -> dict[str, Any]:
    return {"time": t, "event": "grant", "user": "alice", "board": board, "pool": pool, "key": "k",
            "grant": number, "timeout": 0, "waited": waited, "session": None}


def ended(t: float, kind: str, board: str, number: int | None, held: float | None, **more: Any) -> dict[str, Any]:
    entry = {"time": t, "event": kind, "user": "bob", "board": board, "key": "k", "holder": "alice",
             "holder_key": "k", "grant": number, "pool": "", "reason": None, "outcome": "released", **more}
    if held is not None:
        entry["held" if kind != "reclaim" else "age"] = held
    return entry


def known_log(t0: float) -> list[dict[str, Any]]:
    """Ten hours from ``t0``; the figures each board should show are in ``test_exact_figures``."""
    return [
        ended(t0 + 1800, "release", "b2", 3, 5400),  # a hold begun before the period: half of it counts
        grant(t0, "b1", 10, 1),
        ended(t0 + 3600, "release", "b1", 10, 3600),
        grant(t0 + 3600, "b2", 11, 120, pool="trio"),
        grant(t0 + 3630, "solo", 12, 0.5, pool="pair"),
        {"time": t0 + 3700, "event": "timeout", "user": "carol", "target": "trio", "key": "x", "waited": 30},
        ended(t0 + 4000, "release", "solo", None, None, outcome="changed"),  # not a release
        ended(t0 + 4630, "release", "solo", 12, 1000),
        ended(t0 + 5400, "taken-over", "b2", 11, 1800, taken_by="mallory", noticed="info"),
        ended(t0 + 5401, "lock-lost", "b2", 11, None),  # the same hold: counted once
        grant(t0 + 7200, "b1", 13, 3),
        ended(t0 + 9000, "force", "b1", 13, 1800),
        grant(t0 + 30000, "b1", 14, 10),  # still held: up to the period's end
        grant(t0 + 31000, HOSTILE, 15, 2),
    ]


def figures(data: dict[str, Any], name: str) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {row.get("board", row.get("pool")): row
                                       for row in data["boards"] + data["pools"]}
    return rows[name]


# -- the computations ----------------------------------------------------------------------
def test_exact_figures() -> None:
    report = compute(known_log(T0), T0, T0 + PERIOD, BOARDS, POOLS, held_now={"b3": T0 - 1000})
    data = report_json(report)
    assert set(data) == STATS_KEYS and data["period"] == PERIOD and data["timezone"] == "+0000"
    assert [row["board"] for row in data["boards"]] == [*BOARDS, HOSTILE]  # the inventory's, then the log's
    b1 = figures(data, "b1")
    assert (b1["grants"], b1["held"]) == (3, 3600 + 1800 + 6000)
    assert b1["utilization"] == round(11400 / PERIOD, 4)
    assert (b1["wait_p50"], b1["wait_p90"]) == (3, 8.6)  # waits 1, 3, 10
    assert (b1["hold_p50"], b1["hold_p90"]) == (2700, 3420)  # holds 3600, 1800 (the open one has not ended)
    assert b1["busiest_hours"] == [10, 12, 18] and b1["hours"][10] == b1["hours"][12] == b1["hours"][18] == 1
    b2 = figures(data, "b2")
    assert (b2["grants"], b2["held"], b2["utilization"]) == (1, 3600, 0.1)
    assert (b2["wait_p50"], b2["hold_p50"], b2["hold_p90"]) == (120, 3600, 5040)  # holds 5400, 1800
    b3 = figures(data, "b3")  # held since before the period, as the lab says now, with nothing in the log
    assert (b3["grants"], b3["utilization"], b3["wait_p50"], b3["hold_p50"]) == (0, 1.0, None, None)
    solo = figures(data, "solo")
    assert (solo["grants"], solo["held"], solo["hold_p50"]) == (1, 1000, 1000)
    assert figures(data, "x86a") == {"board": "x86a", "grants": 0, "utilization": 0.0, "held": 0.0,
                                     "wait_p50": None, "wait_p90": None, "hold_p50": None, "hold_p90": None,
                                     "busiest_hours": [], "hours": [0] * 24}
    trio = figures(data, "trio")
    assert trio["members"] == ["b1", "b2", "b3"] and (trio["grants"], trio["via_pool"]) == (4, 1)
    assert trio["utilization"] == round((11400 / PERIOD + 0.1 + 1.0) / 3, 4)
    assert (trio["wait_p50"], trio["hold_p50"]) == (6.5, 2700)  # waits 1, 3, 10, 120; holds 5400 3600 1800 1800
    pair = figures(data, "pair")
    assert (pair["grants"], pair["via_pool"], pair["utilization"]) == (1, 1, round((1.0 + 1000 / PERIOD) / 2, 4))
    assert data["hours"][10:13] == [1, 2, 1] and data["hours"][18] == 2 and sum(data["hours"]) == 6


def test_holds_edge_cases() -> None:
    events = [grant(T0, "b1", 1, 0), grant(T0 + 100, "b1", 2, 0),  # the first's end was never logged
              ended(T0 + 200, "release", "b1", 2, 100),
              ended(T0 + 300, "taken-over", "b2", 7, 50), ended(T0 + 301, "reclaim", "b2", None, 51)]
    spans = [(h.board, h.start - T0, None if h.end is None else h.end - T0, h.grant) for h in holds(events)]
    assert spans == [("b1", 0, 100, 1), ("b1", 100, 200, 2), ("b2", 250, 300, 7)]
    assert percentile([], 0.5) is None and percentile([4], 0.9) == 4
    assert percentile([1, 2, 3, 4, 10], 0.9) == pytest.approx(7.6)


# -- the CLI: JSON, plain text, a terminal -----------------------------------------------------
def write_audit(lab: LabFixture, entries: list[dict[str, Any]]) -> None:
    (lab.base / "audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def plant_old_lock(lab: LabFixture, board: str, since: float) -> None:
    """A lock as ``lockfile(1)`` makes it (no key, no grant), taken at ``since``."""
    fd = os.open(lab.lock(board), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.write(fd, b"0\n")
    os.close(fd)
    os.utime(lab.lock(board), (since, since))


def stats_json(lab: LabFixture, *args: str) -> dict[str, Any]:
    proc = run_mq(lab, "stats", *args, "--json", check=True)
    doc = json.loads(proc.stdout)
    assert (doc["mq"], doc["kind"]) == (1, "stats") and proc.stdout.count("\n") == 1
    data: dict[str, Any] = doc["data"]
    return data


def known_lab(lab: LabFixture) -> str:
    """The known log, ending now; b3 held by an old lockfile(1) lock. Its start, for --since."""
    t0 = time.time() - PERIOD
    write_audit(lab, known_log(t0))
    plant_old_lock(lab, "b3", t0 - 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))


def test_json_contract(lab: LabFixture) -> None:
    """Pins the ``stats`` and ``history`` objects; a change here is a version bump."""
    known_lab(lab)
    data = stats_json(lab)
    assert set(data) == STATS_KEYS and len(data["hours"]) == 24
    assert all(set(row) == BOARD_KEYS for row in data["boards"])
    assert all(set(row) == POOL_KEYS for row in data["pools"]) and [p["pool"] for p in data["pools"]] == list(POOLS)
    row = figures(data, "b1")
    assert isinstance(row["grants"], int) and isinstance(row["utilization"], float) and len(row["hours"]) == 24
    assert all(isinstance(row[k], (int, float)) for k in ("wait_p50", "wait_p90", "hold_p50", "hold_p90", "held"))
    assert data["period"] == pytest.approx(7 * 86400, abs=60) and data["until"] == pytest.approx(time.time(), abs=60)
    history = json.loads(run_mq(lab, "history", "--json", check=True).stdout)
    assert history["kind"] == "history" and len(history["data"]) == len(known_log(0))
    assert {"time", "event", "board", "user", "key", "grant"} <= set(history["data"][0])
    assert all(set(e) == {"time", "event", "board", "user", "key", "grant", "pool", "waited", "held", "holder",
                          "detail"} for e in history["data"])


def test_figures_through_the_cli(lab: LabFixture) -> None:
    since = known_lab(lab)
    data = stats_json(lab, "--since", since)
    assert data["period"] == pytest.approx(PERIOD, abs=30)
    b1, b3, trio = figures(data, "b1"), figures(data, "b3"), figures(data, "trio")
    assert (b1["grants"], b1["wait_p50"], b1["wait_p90"], b1["hold_p50"], b1["hold_p90"]) == (3, 3, 8.6, 2700, 3420)
    assert b1["utilization"] == pytest.approx(11400 / PERIOD, abs=0.005)
    assert b3["utilization"] == pytest.approx(1.0, abs=0.001)  # the lockfile(1) lock, held all along
    assert (trio["grants"], trio["via_pool"]) == (4, 1)
    assert figures(data, HOSTILE)["grants"] == 1
    shorter = stats_json(lab, "--since", "1h")  # b3's lock; b1's grant was before, and it holds no lock
    assert figures(shorter, "b1")["grants"] == 0 and figures(shorter, "b3")["utilization"] == pytest.approx(1.0)


def test_real_commands_make_the_figures(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "a", check=True)
    run_mq(lab, "sem", "-signal", "b1", "-k", "a", check=True)
    run_mq(lab, "sem", "-wait", "trio", "-k", "t", check=True)  # b1 again, held now
    assert run_mq(lab, "sem", "-wait", "b1", "-k", "late", "-t", "0").returncode == 2
    data = stats_json(lab, "--since", "1h")
    b1, trio = figures(data, "b1"), figures(data, "trio")
    assert b1["grants"] == 2 and b1["hold_p50"] is not None and 0 <= b1["hold_p50"] < 30
    assert 0 <= b1["wait_p90"] < 30 and 0 < b1["utilization"] < 0.1 and b1["held"] > 0
    assert (trio["grants"], trio["via_pool"]) == (2, 1)
    assert sum(data["hours"]) == 2 and data["hours"][time.gmtime().tm_hour] >= 1
    assert figures(data, "b2")["grants"] == 0


def test_plain_text_when_not_a_terminal(lab: LabFixture) -> None:
    start = known_lab(lab)
    first_hour = int(start[11:13])  # b1's first grant is at the log's start (local time)
    proc = run_mq(lab, "stats", "--since", "11h", check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("period: ") and "(11h00m)" in lines[0] and "\x1b" not in proc.stdout
    assert lines[2].split() == ["board", "grants", "util", "wait", "p50", "wait", "p90", "hold", "p50",
                                "hold", "p90", "busiest", "hours"]
    b1 = next(line for line in lines if line.startswith("b1 ")).split()
    assert b1[1] == "3" and b1[3:7] == ["3.0s", "8.6s", "45m", "57m"]
    pool = next(line for line in lines if line.startswith("trio ")).split()
    assert pool[1:3] == ["1", "4"]
    assert "█" not in proc.stdout and any(line.startswith(f"{first_hour:02d}h ") and "#" in line for line in lines)
    assert "&lt;" not in proc.stdout and HOSTILE in proc.stdout


def stats_on_a_terminal(lab: LabFixture, since: str, columns: int) -> str:
    """What ``mq stats --since SINCE`` draws on a pty ``columns`` wide (it exits 0)."""
    child = pexpect.spawn(sys.executable, ["-m", "mq", "stats", "--since", since],
                          env={**lab.env, "COLUMNS": str(columns)}, encoding="utf-8", timeout=30,
                          dimensions=(60, columns))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return str(child.before)


def test_bar_charts_on_a_terminal(lab: LabFixture) -> None:
    text = stats_on_a_terminal(lab, known_lab(lab), 130)
    assert "\x1b[" in text  # coloured
    assert "█" in text and "░" in text  # utilization bars
    assert "grants by hour of day" in text and "00 01 02" in text
    b3 = next(line for line in text.splitlines() if "b3" in line and "%" in line)
    assert "████████████████████" in b3 and "100.0%" in b3


def test_an_80_column_terminal_gets_every_row_on_one_line(lab: LabFixture) -> None:
    """At 80 columns the tables keep each board's and each pool's row, and the headers, on one
    line (short headers, bare busiest hours); nothing is wider than the terminal."""
    import re

    text = stats_on_a_terminal(lab, known_lab(lab), 80)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.startswith("board "))
    assert header.split() == ["board", "grants", "util", "wait50", "wait90", "hold50", "hold90", "busiest"]
    assert next(line for line in lines if line.startswith("pool ")).split()[:3] == ["pool", "via", "grants"]
    for name in ("b1", "trio"):  # a row whole: the name, the figures and the busiest hours
        row = next(line for line in lines if line.startswith(name + " ") and "%" in line and "█" not in line)
        assert len(row.split()) >= 8, row


def test_since_is_checked(lab: LabFixture) -> None:
    proc = run_mq(lab, "stats", "--since", "soon")
    assert proc.returncode == 5 and proc.stderr.startswith("mq: --since soon: ") and proc.stdout == ""


# -- the HTML page -----------------------------------------------------------------------------
def write_page(lab: LabFixture, tmp_path: Path) -> Path:
    since = known_lab(lab)
    page = tmp_path / "stats.html"
    proc = run_mq(lab, "stats", "--since", since, "--html", str(page), check=True)
    assert proc.stdout == "" and proc.stderr == f"mq: wrote the stats page {page}\n"
    return page


def test_html_page_is_self_contained_and_escaped(lab: LabFixture, tmp_path: Path) -> None:
    text = write_page(lab, tmp_path).read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    lowered = text.lower()
    for external in ("http", "//", "src=", "href=", "<link", "@import", "url(", "<script"):
        assert external not in lowered, external
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count('<rect class="bar board"') == 7 and text.count('<rect class="bar pool"') == 3
    assert text.count('<rect class="bar hour"') == 24
    assert 'data-name="b3" data-value="1.0000"' in text
    both = run_mq(lab, "stats", "--html", str(tmp_path / "again.html"), "--json", check=True)
    assert json.loads(both.stdout)["kind"] == "stats" and (tmp_path / "again.html").exists()


def test_html_file_that_cannot_be_written(lab: LabFixture, tmp_path: Path) -> None:
    proc = run_mq(lab, "stats", "--html", str(tmp_path / "no" / "such" / "dir.html"))
    assert proc.returncode == 5 and proc.stderr.startswith(f"mq: --html {tmp_path}/no/such/dir.html: cannot write")
    assert list(tmp_path.glob("**/*.tmp.*")) == []


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit RGB or RGBA PNG (stdlib only: zlib + struct)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6) and header[12] == 0  # not interlaced
    size = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * size, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - size] if x >= size else 0
            b, c = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if size == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_chromium_renders_the_charts(lab: LabFixture, tmp_path: Path) -> None:
    page = write_page(lab, tmp_path)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('<rect class="bar board"') == 7 and dom.stdout.count('<rect class="bar hour"') == 24
    assert 'data-name="b3" data-value="1.0000"' in dom.stdout and "<svg" in dom.stdout
    shot = tmp_path / "stats.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1200, 900)
    pixels = {row[i:i + 3] for row in rows for i in range(0, len(row), 3)}
    assert len(pixels) > 20  # not blank: text, bars, tracks
    assert bytes((0x2F, 0x8F, 0x5B)) in pixels  # a board's utilization bar (b3: full)
    assert bytes((0xC2, 0x73, 0x0F)) in pixels  # an hour-of-day bar
    assert bytes((0x34, 0x66, 0xC2)) in pixels  # a pool's bar


def test_stats_is_documented() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
    section = page.split("## `mq stats`", 1)[1].split("\n# ", 1)[0].split("\n## ", 1)[0]
    assert "--html" in section and "`stats`" in section and "utilization" in section
