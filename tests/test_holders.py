"""``mq holders``: the locks held longer than a limit, and ``--notify``, the lockbot built in.

The real CLI on a real lab; the notification command is a small recorder
script that writes its argv as JSON, so each test sees exactly what it was
given (every placeholder one argument, no shell anywhere).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import LabFixture, engine, run_mq
from mq.cli import holders as holders_cli
from mq.engine.core.errors import ExitCode

HOSTILE_KEY = "'; touch pwned #$(touch pwned2) `id` {user}"
RECORDER = textwrap.dedent("""\
    import json, os, sys
    with open(os.environ["RECORD"], "a") as handle:
        handle.write(json.dumps(sys.argv[1:]) + "\\n")
    print("recorder ran for", sys.argv[1:2])
    sys.exit(1 if "fail-b1" in sys.argv and "b1" in sys.argv else 0)
    """)


def legacy_lock(lab: LabFixture, board: str, age: float) -> float:
    """A lock as lockfile(1) leaves it (no key, no grant), made ``age`` seconds ago; its time."""
    fd = os.open(lab.lock(board), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.write(fd, b"0\n")
    os.close(fd)
    when = time.time() - age
    os.utime(lab.lock(board), (when, when))
    return when


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    script, record = tmp_path / "recorder.py", tmp_path / "record.jsonl"
    script.write_text(RECORDER)
    monkeypatch.setenv("RECORD", str(record))
    return script, record


def recorded(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_no_lock_held_long(lab: LabFixture) -> None:
    engine(lab).wait("b1", key="fresh", budget=0)
    proc = run_mq(lab, "holders")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "mq: no lock held longer than 2h\n")
    proc = run_mq(lab, "holders", "--json")
    assert json.loads(proc.stdout) == {"mq": 1, "kind": "holders", "data": []}


def test_locks_older_than_the_limit_in_inventory_order(lab: LabFixture) -> None:
    old = legacy_lock(lab, "x86a", 3 * 3600)
    legacy_lock(lab, "b3", 3600)
    grant = engine(lab).wait("b1", key="ci-42", budget=0)
    proc = run_mq(lab, "holders")
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["BOARD", "USER", "KEY", "SINCE", "HELD", "GRANT"]
    assert [line.split()[:3] for line in lines[1:]] == [["x86a", "root", "0"]]
    assert lines[1].split()[-1] == "3h00m"
    assert [line.split()[0] for line in run_mq(lab, "holders", "--older-than", "30m").stdout.splitlines()[1:]] == \
        ["b3", "x86a"]
    everything = json.loads(run_mq(lab, "holders", "--older-than", "0", "--json").stdout)["data"]
    assert [h["board"] for h in everything] == ["b1", "b3", "x86a"]
    first, last = everything[0], everything[2]
    assert set(first) == {"board", "user", "key", "since", "held", "grant", "offline"}
    assert (first["user"], first["key"], first["grant"], first["offline"]) == ("root", "ci-42", grant.grant, None)
    assert 0 <= first["held"] < 60 and isinstance(first["since"], float)
    assert (last["key"], last["grant"]) == (None, None)
    assert abs(last["since"] - old) < 1 and abs(last["held"] - 3 * 3600) < 60


@pytest.mark.parametrize(("text", "listed"), [("1h30m", ["x86a"]), ("90m", ["x86a"]), ("5400", ["x86a"]),
                                              ("2h", []), ("1d", []), ("45s", ["b2", "x86a"])])
def test_durations(lab: LabFixture, text: str, listed: list[str]) -> None:
    legacy_lock(lab, "x86a", 100 * 60)
    legacy_lock(lab, "b2", 50)
    data = json.loads(run_mq(lab, "holders", "--older-than", text, "--json").stdout)["data"]
    assert [h["board"] for h in data] == listed


@pytest.mark.parametrize("text", ["2x", "-5", "", "h", "1.5.2h", "soon"])
def test_bad_durations_are_refused(lab: LabFixture, text: str) -> None:
    proc = run_mq(lab, "holders", "--older-than", text)
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert "--older-than" in proc.stderr and proc.stdout == ""


def test_offline_boards(lab: LabFixture) -> None:
    """A maintenance lock is nobody's to give back: not listed. A holder of a board taken
    offline is, with the board's reason."""
    run_mq(lab, "offline", "b1", "--reason", "new firmware", check=True)
    engine(lab).wait("b2", key="K", budget=0)
    run_mq(lab, "offline", "b2", "--reason", "flaky UART", check=True)
    data = json.loads(run_mq(lab, "holders", "--older-than", "0", "--json").stdout)["data"]
    assert [(h["board"], h["key"]) for h in data] == [("b2", "K")]
    offline = data[0]["offline"]
    assert set(offline) == {"reason", "user", "since"}
    assert (offline["reason"], offline["user"]) == ("flaky UART", "root")
    lines = run_mq(lab, "holders", "--older-than", "0").stdout.splitlines()
    assert lines[2] == "    offline: flaky UART (by root): the maintenance lock takes its place when released"


# -- --notify ---------------------------------------------------------------------------------
def test_notify_passes_each_value_as_one_argument_without_a_shell(lab: LabFixture, recorder: tuple[Path, Path],
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    script, record = recorder
    since = legacy_lock(lab, "x86a", 3 * 3600)
    grant = engine(lab).wait("b1", key=HOSTILE_KEY, budget=0)
    monkeypatch.chdir(tmp_path)
    template = (f"{sys.executable} {script} {{board}} {{user}} {{key}} {{since}} {{held}} {{grant}} "
                "'--subject=you hold {board} since {since}' {User}")
    proc = run_mq(lab, "holders", "--older-than", "0", "--json", "--notify", template)
    assert proc.returncode == 0, proc.stderr
    assert [h["board"] for h in json.loads(proc.stdout)["data"]] == ["b1", "x86a"]  # stdout: the data only
    assert "recorder ran for ['b1']" in proc.stderr  # the command's output goes to stderr
    first, second = recorded(record)
    assert first[:3] == ["b1", "root", HOSTILE_KEY] and first[5] == str(grant.grant)
    assert first[7] == "{User}"  # not a placeholder (they are lower case): passed as written
    assert second[:3] == ["x86a", "root", "0"] and second[5] == ""  # no key file; not granted by mq
    assert second[4] == "3h00m"
    when = second[3]
    assert when.startswith(time.strftime("%Y-%m-%dT%H:%M", time.localtime(since))) and when[-6] in "+-"
    assert second[6] == f"--subject=you hold x86a since {when}"
    assert len(first) == len(second) == 8
    for where in (tmp_path, lab.base, Path.cwd()):
        assert not list(where.rglob("pwned*"))


def test_unknown_placeholder_refused_before_anything_runs(lab: LabFixture, recorder: tuple[Path, Path]) -> None:
    script, record = recorder
    legacy_lock(lab, "x86a", 3 * 3600)
    proc = run_mq(lab, "holders", "--notify", f"{sys.executable} {script} {{board}} {{usr}}")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "--notify: unknown placeholder {usr} (known: {user}, {board}, {since}, {key}, {held}, {grant})" \
        in proc.stderr
    assert proc.stdout == "" and recorded(record) == []
    for bad in ("'unclosed", "", "''"):
        proc = run_mq(lab, "holders", "--notify", bad)
        assert proc.returncode == ExitCode.BAD_INPUT and "--notify" in proc.stderr


def test_a_failing_notification_is_named_and_the_others_still_run(lab: LabFixture,
                                                                   recorder: tuple[Path, Path]) -> None:
    script, record = recorder
    legacy_lock(lab, "b1", 3 * 3600)
    legacy_lock(lab, "b2", 3 * 3600)
    proc = run_mq(lab, "holders", "--notify", f"{sys.executable} {script} {{board}} fail-b1")
    assert proc.returncode == ExitCode.NOTIFY_FAILED == 17
    assert "mq: notify for b1 (root) failed: exit 1\n" in proc.stderr
    assert "b2 (root) failed" not in proc.stderr
    assert [argv[0] for argv in recorded(record)] == ["b1", "b2"]
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["BOARD", "b1", "b2"]

    proc = run_mq(lab, "holders", "--notify", "/nonexistent/mq-notify {user}")
    assert proc.returncode == 17
    assert "mq: notify for b1 (root) failed: cannot run /nonexistent/mq-notify: No such file or directory" \
        in proc.stderr


def test_a_notification_that_hangs_is_killed_with_its_children(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setattr(holders_cli, "NOTIFY_TIMEOUT", 1.0)
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    why = holders_cli.notify(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
    assert why == "timed out after 1 s"
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by init at once, or a zombie for a moment
            os.kill(child, 0)
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                raise ProcessLookupError
            time.sleep(0.05)
    assert holders_cli.notify(["sh", "-c", "kill -TERM $$"]) == "killed by signal 15"


def test_notify_names_each_holder(shared_lab: LabFixture, test_users: tuple[str, ...],
                                  recorder: tuple[Path, Path]) -> None:
    lab = shared_lab
    alice, bob, _ = test_users
    run_mq(lab, "sem", "-wait", "b1", "-k", "a's job", user=alice, check=True)
    run_mq(lab, "sem", "-wait", "trio", "-k", "-rf /", user=bob, check=True)
    script, record = recorder
    proc = run_mq(lab, "holders", "--older-than", "0", "--notify", f"{sys.executable} {script} {{board}} {{user}} "
                                                                    "{key}")
    assert proc.returncode == 0, proc.stderr
    assert recorded(record) == [["b1", alice, "a's job"], ["b2", bob, "-rf /"]]
