"""One voice: every diagnostic on stderr with ``mq: ``, data on stdout; the command line as
``mq.sh`` users type it; configuration mistakes and out-of-range numbers are errors, not crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LabFixture, run_mq


def mq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mq", *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Exit ``code``, nothing on stdout, one ``mq: `` line on stderr containing ``text``."""
    assert proc.returncode == code, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mq: ") and text in lines[0], lines


# -- the command line ---------------------------------------------------------------------------
def test_a_misspelt_command_is_suggested_once() -> None:
    one_line(mq("sme"), 64, "No such command 'sme'. Did you mean 'sem'?")
    assert mq("sme").stderr.count("Did you mean") == 1


def test_a_misspelt_command_with_two_near_names_is_suggested_once() -> None:
    proc = mq("stauts")
    one_line(proc, 64, "No such command 'stauts'. Did you mean 'stats', 'status'?")
    assert proc.stderr.count("Did you mean") == 1, proc.stderr


def test_dash_help_alone() -> None:
    """``mq -help``, as ``mq sem -help`` works: the usage, not "No such option '-e'"."""
    proc = mq("-help")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: mq [OPTIONS] COMMAND"), proc


@pytest.mark.parametrize("command", ["sem", "run"])
def test_dash_help_as_mq_sh_users_type_it(command: str) -> None:
    proc = mq(command, "-help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"Usage: mq {command} [OPTIONS]"), proc


@pytest.mark.parametrize(("args", "text"), [
    (("sem", "-wiat", "b1"), "no such option -wiat (did you mean -wait?)"),
    (("sem", "-wait", "b1", "-kye", "K"), "no such option -kye"),
    (("run", "-s", "b1", "-c", "x", "-dd", "5"), "no such option -dd"),
])
def test_a_misspelt_word_option_is_named_not_parsed_as_a_value(lab: LabFixture, args: tuple[str, ...],
                                                               text: str) -> None:
    one_line(run_mq(lab, *args), 64, text)
    assert lab.held() == set() and lab.tickets() == []


def test_a_word_that_is_an_options_value_is_left_alone(lab: LabFixture) -> None:
    proc = run_mq(lab, "sem", "-wait", "b1", "-k", "-wiat", check=True)
    assert proc.stdout == "b1\n"
    assert lab.key("b1").read_text() == "-wiat\n"


def test_mq_alone_prints_usage_and_the_commands() -> None:
    proc = mq()
    assert proc.returncode == 64 and proc.stdout == ""
    assert proc.stderr.startswith("Usage: mq [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in proc.stderr and "  sem " in proc.stderr and "  run " in proc.stderr
    assert "mq: Usage" not in proc.stderr


def test_help_explains_name_dumpall_and_mode() -> None:
    sem = mq("sem", "--help").stdout
    assert "NAME is a system (one board) or a pool" in sem and "mq sem dumpall" in sem
    assert "MODE 'simple' prints just the names" in mq("systems", "--help").stdout


def test_diagnostics_go_to_stderr_data_to_stdout(lab: LabFixture) -> None:
    took = run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    assert took.stdout == "b1\n" and took.stderr.startswith("mq: Acquired lock for b1, grant #")
    released = run_mq(lab, "sem", "-signal", "b1", "-k", "K", check=True)
    assert (released.stdout, released.stderr) == ("", "mq: Released lock for b1\n")
    cancelled = run_mq(lab, "sem", "-cancel", "b1", "-k", "K", check=True)
    assert (cancelled.stdout, cancelled.stderr) == ("", "mq: Cancelled 0 wait(s) for b1 with key 'K'\n")
    one_line(run_mq(lab, "sem", "-info", "nope"), 1, "Unknown system or pool 'nope'")


# -- configuration errors -----------------------------------------------------------------------
def test_an_explicit_lab_file_that_is_missing_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "lab.toml"
    one_line(mq("sem", "-info", "x", env={"MQ_LAB": str(missing)}), 6, f"{missing}: no such file")
    assert not missing.parent.exists()


def test_an_explicit_lab_file_in_an_existing_folder_is_not_replaced_by_the_demo(tmp_path: Path) -> None:
    named = tmp_path / "lab.toml"
    proc = mq("sem", "-info", "x", env={"MQ_LAB": str(named)})
    one_line(proc, 6, f"{named}: no such file")
    assert not named.exists() and "demo lab" not in proc.stderr


@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("flag", ["--host", "--base"])
def test_an_empty_host_or_base_option_is_refused(flag: str, value: str) -> None:
    one_line(mq(flag, value, "sem", "-info", "b1"), 6, f"{flag}: expected a non-empty value")
    one_line(mq(f"{flag}={value}", "sem", "-info", "b1"), 6, f"{flag}: expected a non-empty value")


# -- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "text"), [
    (("-t", "99999999999999999999"), "-w 8 -t 99999999999999999999: a wait of 8e+20 s is out of range"),
    (("-w", "1e300", "-t", "1"), "a wait of 1e+300 s is out of range"),
    (("-w", "nan"), "-w nan: the retry period must be a number of seconds >= 0"),
    (("-T", "99999999999999999999"), "-T 99999999999999999999: out of range (0 to 999999999 seconds)"),
    (("-T", "-5"), "-T -5: out of range"),
])
def test_out_of_range_numbers_are_bad_input(lab: LabFixture, args: tuple[str, ...], text: str) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "H", check=True)  # held: a wait would block
    started = time.monotonic()
    one_line(run_mq(lab, "sem", "-wait", "b1", "-k", "W", *args), 5, text)
    assert time.monotonic() - started < 10
    assert lab.tickets() == []


def test_an_infinite_period_with_one_try_is_one_try(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "H", check=True)
    proc = run_mq(lab, "sem", "-wait", "b1", "-k", "W", "-w", "inf", "-t", "0")
    assert proc.returncode == 2, proc
    assert lab.tickets() == []


def test_an_unknown_systems_mode_fails_whatever_the_format(lab: LabFixture) -> None:
    """``mq systems foo --json`` fails as ``mq systems foo`` does (it printed the inventory, exit 0)."""
    import json

    one_line(run_mq(lab, "systems", "foo"), 5, "Unknown systems mode 'foo' (did you mean 'simple'?)")
    proc = run_mq(lab, "systems", "foo", "--json")
    assert proc.returncode == 5, proc
    envelope = json.loads(proc.stdout)
    assert envelope["kind"] == "error" and envelope["data"]["error"] == "BadInputError", envelope


def test_one_try_shows_no_waiting_line_and_says_who_holds_the_board(lab: LabFixture) -> None:
    """``-w 0 -t 0`` is one try: no ``waiting: position 1 of 1`` line, and the failure says who
    holds the board (the waiting line used to, the failure line did not)."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", check=True)
    proc = run_mq(lab, "sem", "-wait", "b1", "-k", "B", "-w", "0", "-t", "0")
    one_line(proc, 2, "Failed to acquire lock for system (b1): b1 held by ")
    assert "key A" in proc.stderr and "waiting" not in proc.stderr, proc.stderr


def test_durations_where_people_think_in_durations(lab: LabFixture) -> None:
    """``-T 10m`` is 600 s (a plain number is still seconds); ``--timeout`` is the total wait
    (instead of ``-w`` x ``-t``); a word that is no duration is a usage error."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "A", "-T", "10m", check=True)
    assert "timeout 600 with key 'A'" in run_mq(lab, "sem", "-info", "b1", check=True).stdout
    started = time.monotonic()
    proc = run_mq(lab, "sem", "-wait", "b1", "-k", "B", "--timeout", "1s")
    assert proc.returncode == 2 and time.monotonic() - started >= 1.0, proc
    assert "Failed to acquire lock for system (b1)" in proc.stderr
    one_line(run_mq(lab, "sem", "-wait", "b1", "-k", "B", "--timeout", "1x"), 64,
             "'1x' is not a duration (90, 90s, 30m, 2h or 1h30m)")
    one_line(run_mq(lab, "sem", "-wait", "b1", "-k", "B", "--timeout", "5", "-t", "3"), 64,
             "--timeout replaces -w and -t")
    one_line(run_mq(lab, "sem", "-wait", "b2", "-k", "B", "-T", "1.5"), 64, "not a whole number of seconds")
    assert lab.tickets() == [] and lab.held() == {"b1"}
