"""``mq history``: the audit log's events, one line each or as ``history`` JSON.

The logs are made by real ``mq`` commands (grants, releases, a timeout, a cancel, a
reclaim), or written by hand with known times (TZ is UTC in every test) for exact lines.
"""

from __future__ import annotations

import calendar
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import LabFixture, Procs, SshLab, queued, run_mq, spawn_mq, wait_for
from mq.client.since import parse_since, span_seconds
from mq.settings.errors import BadInputError

ME = pwd.getpwuid(os.getuid()).pw_name
HISTORY_KEYS = {"time", "event", "board", "user", "key", "grant", "pool", "waited", "held", "holder", "detail"}
T0 = float(calendar.timegm((2026, 11, 18, 10, 13, 20)))


def write_audit(lab: LabFixture, entries: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> None:
    """An ``audit.jsonl`` written by hand: the entries (one JSON object a line), then ``extra_lines``."""
    lines = [json.dumps(entry, sort_keys=True) for entry in entries] + list(extra_lines)
    (lab.base / "audit.jsonl").write_text("".join(line + "\n" for line in lines))


def history(lab: LabFixture, *args: str) -> list[dict[str, Any]]:
    proc = run_mq(lab, "history", *args, "--json", check=True)
    doc = json.loads(proc.stdout)
    assert (doc["mq"], doc["kind"]) == (1, "history")
    events: list[dict[str, Any]] = doc["data"]
    return events


# -- real commands -----------------------------------------------------------------------
def test_history_of_real_grants_releases_and_a_timeout(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "ci", check=True)
    run_mq(lab, "sem", "-wait", "trio", "-k", "pooled", check=True)  # b2
    assert run_mq(lab, "sem", "-wait", "b1", "-k", "other", "-t", "0").returncode == 2
    run_mq(lab, "sem", "-signal", "b1", "-k", "ci", check=True)
    run_mq(lab, "sem", "-wait", "solo", "-k", "alone", check=True)

    events = history(lab)
    assert [(e["event"], e["board"], e["key"], e["grant"]) for e in events] == [
        ("grant", "b1", "ci", 1), ("grant", "b2", "pooled", 2), ("timeout", "b1", "other", None),
        ("release", "b1", "ci", 1), ("grant", "solo", "alone", 3)]
    assert all(set(e) == HISTORY_KEYS and e["user"] == ME for e in events)
    assert events[1]["pool"] == "trio" and events[0]["pool"] is None
    assert events[0]["waited"] is not None and events[0]["waited"] < 5
    assert events[3]["held"] is not None and events[3]["held"] >= 0 and events[3]["holder"] == ME
    times = [e["time"] for e in events]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60

    lines = run_mq(lab, "history", check=True).stdout.splitlines()
    assert len(lines) == 5
    assert lines[1].split()[2:7] == ["grant", "b2", ME, "key", "'pooled'"] and lines[1].endswith("via trio")
    assert "#2" in lines[1].split() and "waited" in lines[1]
    assert lines[2].split()[2:4] == ["timeout", "b1"] and lines[2].endswith("wait budget ran out")
    assert lines[3].split()[2:4] == ["release", "b1"] and " held " in lines[3] and "#1" in lines[3].split()

    # a board: its events, and those of waits for its pools; a pool: its members'
    assert [(e["event"], e["board"]) for e in history(lab, "b1")] == [
        ("grant", "b1"), ("timeout", "b1"), ("release", "b1")]
    assert {e["board"] for e in history(lab, "trio")} == {"b1", "b2"}
    assert [e["board"] for e in history(lab, "pair")] == ["solo"]


def test_history_shows_a_cancelled_wait(lab: LabFixture, procs: Procs) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "holder", check=True)
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "queued")
    procs.append(waiter)
    wait_for(lambda: len(queued(lab)) == 1, what="the waiter's ticket")
    run_mq(lab, "sem", "-cancel", "b1", "-k", "queued", check=True)
    assert waiter.wait(timeout=20) == 2
    cancel = history(lab, "b1")[-1]
    assert (cancel["event"], cancel["board"], cancel["key"], cancel["user"]) == ("cancel", "b1", "queued", ME)
    line = run_mq(lab, "history", "b1", check=True).stdout.splitlines()[-1]
    assert line.split()[2:6] == ["cancel", "b1", ME, "key"] and line.endswith("wait cancelled")


def test_history_shows_a_reclaim_with_whose_lock_and_how_long(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "old", "-T", "1", check=True)
    wait_for(lambda: time.time() - lab.lock("b1").stat().st_mtime > 1.2, what="the -T 1 to pass")
    run_mq(lab, "sem", "-wait", "b1", "-k", "new", check=True)
    events = history(lab, "b1")
    assert [(e["event"], e["grant"]) for e in events] == [("grant", 1), ("reclaim", 1), ("grant", 2)]
    reclaim = events[1]
    assert (reclaim["user"], reclaim["holder"], reclaim["key"]) == (ME, ME, "old")
    assert reclaim["held"] is not None and reclaim["held"] >= 1.2
    assert reclaim["detail"] == "its -T 1 had passed"
    line = run_mq(lab, "history", "b1", check=True).stdout.splitlines()[1]
    assert line.split()[2:7] == ["reclaim", "b1", ME, "key", "'old'"] and line.endswith("its -T 1 had passed")


# -- hand-written logs: exact lines --------------------------------------------------------
HAND_LOG = [
    {"time": T0, "event": "grant", "user": "alice", "board": "b1", "pool": "", "key": "ci", "grant": 7,
     "timeout": 0, "waited": 0.004, "session": None},
    {"time": T0 + 60, "event": "grant", "user": "bob", "board": "b2", "pool": "trio", "key": "nightly",
     "grant": 8, "timeout": 3600, "waited": 754.2, "session": None},
    {"time": T0 + 3725, "event": "release", "user": "alice", "board": "b1", "key": "ci", "holder": "alice",
     "holder_key": "ci", "held": 3725.0, "grant": 7, "pool": "", "reason": None, "outcome": "released"},
    {"time": T0 + 4000, "event": "offline", "user": "carol", "board": "b1", "reason": "flaky UART"},
    {"time": T0 + 4100, "event": "force", "user": "carol", "board": "b2", "key": "0", "holder": "bob",
     "holder_key": "nightly", "held": 4040.0, "grant": 8, "pool": "trio", "reason": None, "outcome": "released"},
    {"time": T0 + 5000, "event": "timeout", "user": "dave", "target": "trio", "key": "k", "waited": 60.0},
    {"time": T0 + 7200, "event": "reclaim", "user": "bob", "reason": "expired", "board": "solo",
     "previous_user": "erin", "previous_key": "old", "grant": 5, "timeout": 60, "age": 9000.0},
    {"time": T0 + 7300, "event": "online", "user": "carol", "board": "b1"},
]


def test_history_lines_from_a_known_log(lab: LabFixture) -> None:
    write_audit(lab, HAND_LOG, extra_lines=("not json", "[1, 2]", '{"event": "grant"}'))
    lines = run_mq(lab, "history", check=True).stdout.splitlines()
    assert lines == [
        "2026-11-18 10:13:20  grant    b1    alice  key 'ci'       #7  waited 0.0s",
        "2026-11-18 10:14:20  grant    b2    bob    key 'nightly'  #8  waited 12m   via trio",
        "2026-11-18 11:15:25  release  b1    alice  key 'ci'       #7  held 1h02m",
        "2026-11-18 11:20:00  offline  b1    carol  -                               flaky UART",
        "2026-11-18 11:21:40  force    b2    carol  key 'nightly'  #8  held 1h07m   via trio; bob's lock",
        "2026-11-18 11:36:40  timeout  trio  dave   key 'k'            waited 1m    wait budget ran out",
        "2026-11-18 12:13:20  reclaim  solo  bob    key 'old'      #5  held 2h30m   erin's lock; its -T 60 had passed",
        "2026-11-18 12:15:00  online   b1    carol  -",
    ]
    events = history(lab)
    assert [e["event"] for e in events] == [e["event"] for e in HAND_LOG]
    assert events[4] == {"time": T0 + 4100, "event": "force", "board": "b2", "user": "carol", "key": "nightly",
                         "grant": 8, "pool": "trio", "waited": None, "held": 4040.0, "holder": "bob", "detail": None}
    assert events[3]["detail"] == "flaky UART" and events[3]["key"] is None
    assert events[5]["board"] == "trio" and events[5]["waited"] == 60.0


def test_history_since_a_span_or_a_date(lab: LabFixture) -> None:
    now = time.time()
    write_audit(lab, [{"time": now - 3 * 86400, "event": "grant", "user": "a", "board": "b1", "key": "old", "grant": 1},
                      {"time": now - 2 * 3600, "event": "grant", "user": "a", "board": "b2", "key": "mid", "grant": 2},
                      {"time": now - 60, "event": "grant", "user": "a", "board": "b3", "key": "new", "grant": 3}])
    assert [e["key"] for e in history(lab)] == ["old", "mid", "new"]  # default: the whole log
    assert [e["key"] for e in history(lab, "--since", "1d")] == ["mid", "new"]
    assert [e["key"] for e in history(lab, "--since", "90m")] == ["new"]
    assert [e["key"] for e in history(lab, "--since", "1h30m")] == ["new"]
    assert [e["key"] for e in history(lab, "--since", "10800")] == ["mid", "new"]
    day = time.strftime("%Y-%m-%d %H:%M", time.localtime(now - 86400))
    assert [e["key"] for e in history(lab, "--since", day)] == ["mid", "new"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    assert [e["key"] for e in history(lab, "--since", iso)] == ["new"]
    assert history(lab, "b1", "--since", "1w") == history(lab, "b1")


@pytest.mark.parametrize("value", ["yesterday", "7x", "-3d", "0", "2026-13-01", "2999-01-01", "1d 2h", ""])
def test_a_bad_since_is_bad_input(lab: LabFixture, value: str) -> None:
    proc = run_mq(lab, "history", "--since", value)
    assert proc.returncode == 5, proc
    assert proc.stderr.startswith(f"mq: --since {value}: ") and len(proc.stderr.splitlines()) == 1
    assert proc.stdout == ""
    doc = json.loads(run_mq(lab, "history", "--since", value, "--json").stdout)
    assert (doc["kind"], doc["data"]["error"], doc["data"]["exit_code"]) == ("error", "BadInputError", 5)


def test_history_of_an_unknown_name_lists_the_valid_ones(lab: LabFixture) -> None:
    proc = run_mq(lab, "history", "nosuch")
    assert proc.returncode == 1 and "Valid systems: b1" in proc.stderr


def test_an_empty_or_missing_log_is_no_history(lab: LabFixture) -> None:
    assert run_mq(lab, "history", check=True).stdout == ""
    assert history(lab) == []


def test_hostile_text_in_the_log_stays_on_one_line(lab: LabFixture) -> None:
    write_audit(lab, [{"time": T0, "event": "grant", "user": "mallory\x1b[2J", "board": "b1",
                       "key": "k\nfake line\r", "grant": 1, "waited": 1},
                      {"time": T0 + 1, "event": "grant", "user": 42, "board": "b1", "key": None, "grant": "x"}],
                extra_lines=('{"time": 1e300, "event": "release", "board": "b1", "held": NaN, "waited": Infinity}',))
    lines = run_mq(lab, "history", check=True).stdout.splitlines()
    assert len(lines) == 3 and lines[2].split()[:3] == ["?", "release", "b1"]
    assert "\x1b" not in lines[0] and "key 'k\\nfake line\\r'" in lines[0] and "mallory\\x1b[2J" in lines[0]
    events = history(lab)
    assert events[0]["key"] == "k\nfake line\r"  # JSON: the text as it is
    assert events[1]["user"] == "42" and events[1]["grant"] is None and events[1]["key"] is None
    assert (events[2]["time"], events[2]["held"], events[2]["waited"]) == (1e300, None, None)
    assert run_mq(lab, "stats", "--json", check=True).stdout.startswith('{"data": ')


# -- --since parsing -----------------------------------------------------------------------
def test_since_spans_and_dates() -> None:
    now = 2_000_000_000.0
    assert span_seconds("90m") == 5400 and span_seconds("1h30m") == 5400 and span_seconds("2w") == 14 * 86400
    assert span_seconds("2026-11-30") is None
    assert parse_since("12h", now) == now - 43200
    assert parse_since("45", now) == now - 45
    assert parse_since("2026-11-30", now) == calendar.timegm((2026, 11, 30, 0, 0, 0))  # local midnight; TZ=UTC
    assert parse_since("2026-11-30 14:00", now) == parse_since("2026-11-30T14:00:00+00:00", now)
    assert parse_since("2026-11-30T14:00:00+10:00", now) == parse_since("2026-11-30 04:00", now)
    assert parse_since("2026-11-30T14:00+1000", now) == parse_since("2026-11-30 04:00", now)
    with pytest.raises(BadInputError, match="not in the past"):
        parse_since("2033-06-01", now)


def test_history_is_documented() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
    section = page.split("## `mq history`", 1)[1].split("\n# ", 1)[0].split("\n## ", 1)[0]
    assert "mq history" in section and "--since" in section and "`history`" in section


def test_history_and_stats_over_ssh(ssh_lab: SshLab) -> None:
    """The same events through the lab's one SSH connection, as another user sees them."""
    ssh_lab.mq("mqalice", "sem", "-wait", "trio", "-k", "remote")
    done = ssh_lab.mq("mqalice", "sem", "-signal", "b1", "-k", "remote")
    assert done.returncode == 0, done.stderr
    proc = ssh_lab.mq("mqbob", "history", "--json")
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout)["data"]
    assert [(e["event"], e["board"], e["user"], e["pool"]) for e in events] == [
        ("grant", "b1", "mqalice", "trio"), ("release", "b1", "mqalice", "trio")]
    stats = ssh_lab.mq("mqbob", "stats", "--since", "1h", "--json")
    assert stats.returncode == 0, stats.stderr
    board = next(row for row in json.loads(stats.stdout)["data"]["boards"] if row["board"] == "b1")
    assert board["grants"] == 1 and board["hold_p50"] is not None
