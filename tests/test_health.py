"""Board health (issue 12, item 4): after ``health_limit`` board failures of ``mq run`` in a row a
board takes itself offline; test failures never count; a healthy run or ``mq online`` ends the row.

The boards boot a small script whose behaviour a mode file chooses (``modes/<board>``): a board
that dies before printing, a silent console, one that prints nothing until ``-d``, a test that
fails, a kernel that prints and then hangs, a good run. ``power_off`` fails while a flag file
exists. Everything is real: the CLI, the run job, the lock directory, the audit log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Procs, make_lab, run_mq, spawn_mq, ticket_pids, wait_for
from mq.engine.core.errors import ExitCode

BOOT = textwrap.dedent(
    """
    import sys, time
    mode = open(sys.argv[1]).read().strip()
    while mode == "gated":  # dies once the gate file appears
        time.sleep(0.05)
        try:
            open(sys.argv[1] + ".gate").close()
            mode = "dead"
        except OSError:
            pass
    if mode == "dead":
        sys.exit(3)
    if mode == "silent":
        sys.exit(0)
    if mode == "dark":
        time.sleep(60)
    print("U-Boot 2024.01", flush=True)
    if mode == "hang":
        time.sleep(60)
    print("Test FAILED" if mode == "testfail" else "All is well", flush=True)
    time.sleep(60)
    """
)


class HealthLab:
    def __init__(self, root: Path, limit: int | None) -> None:
        self.lab = make_lab(root / "lab")
        self.modes = root / "modes"
        self.modes.mkdir()
        boot = root / "boot.py"
        boot.write_text(BOOT)
        self.fail_power = root / "power-fails"
        power = f'power_off = "sh -c \\"test ! -e {self.fail_power}\\""\n'
        text = ""
        for board in ("b1", "b2", "b3"):
            text += f'[systems.{board}]\nsoc = "imx8"\nboot = "{{python}} {boot} {self.modes}/{{system}}"\n{power}'
            if limit is not None:
                text += f"health_limit = {limit}\n"
            (self.modes / board).write_text("ok")
        text += '[pools.trio]\nsystems = ["b1", "b2", "b3"]\n'
        self.lab.inventory.write_text(text)
        self.image = root / "image.img"
        self.image.write_text("image\n")

    def mode(self, board: str, mode: str) -> None:
        (self.modes / board).write_text(mode)

    def run(self, target: str = "b1", *extra: str) -> subprocess.CompletedProcess[str]:
        return run_mq(self.lab, "run", "-s", target, "-f", str(self.image), "-c", "All is well", "-e", "FAILED",
                      *extra, timeout=60)

    def health_events(self) -> list[dict[str, object]]:
        return [e for e in self.lab.audit() if e["event"] == "health"]

    def offline_reason(self, board: str) -> str | None:
        data = json.loads(run_mq(self.lab, "sem", "-info", board, "--json", check=True).stdout)["data"][0]
        offline = data.get("offline")
        return None if offline is None else str(offline["reason"])


@pytest.fixture
def hl(tmp_path: Path) -> HealthLab:
    return HealthLab(tmp_path, limit=3)


def test_three_boot_failures_in_a_row_take_the_board_offline(hl: HealthLab) -> None:
    hl.mode("b1", "dead")
    for count in (1, 2):
        proc = hl.run()
        assert proc.returncode == ExitCode.RUN_CONSOLE_ENDED, proc.stderr
        assert f"board failure {count} of 3 in a row (health_limit)" in proc.stderr, proc.stderr
        assert hl.offline_reason("b1") is None
    proc = hl.run()
    assert proc.returncode == ExitCode.RUN_CONSOLE_ENDED
    reason = hl.offline_reason("b1")
    assert reason is not None and reason.startswith("health: 3 boot failures in a row, last at "), reason
    assert "(the boot command exited 3 before any console output)" in reason
    assert f"b1 is now offline: {reason}" in proc.stderr
    assert [e["count"] for e in hl.health_events()] == [1, 2, 3]
    offline = [e for e in hl.lab.audit() if e["event"] == "offline"]
    assert len(offline) == 1 and offline[0]["reason"] == reason
    # out of service: the maintenance lock holds it, a run for it alone is refused, the pool skips it
    assert hl.lab.held() == {"b1"}
    refused = hl.run()
    assert refused.returncode == ExitCode.BOARD_OFFLINE and "health: 3 boot failures" in refused.stderr
    for _ in range(3):
        served = hl.run("trio")
        assert served.returncode == 0 and "mq: b1:" not in served.stderr, served.stderr


def test_test_failures_never_count_and_a_board_that_printed_ends_the_row(tmp_path: Path) -> None:
    hl = HealthLab(tmp_path, limit=2)
    hl.mode("b1", "dead")
    assert hl.run().returncode == ExitCode.RUN_CONSOLE_ENDED  # 1 of 2
    hl.mode("b1", "testfail")
    assert hl.run().returncode == ExitCode.RUN_ERROR_TEXT  # the software's failure: the row ends
    hl.mode("b1", "hang")
    assert hl.run("b1", "-d", "1").returncode == ExitCode.RUN_TIMED_OUT  # printed, then hung: not the board
    hl.mode("b1", "dead")
    assert hl.run().returncode == ExitCode.RUN_CONSOLE_ENDED  # 1 of 2 again
    assert hl.offline_reason("b1") is None
    assert [e["outcome"] for e in hl.health_events()] == ["boot", "healthy", "boot"]
    assert hl.run().returncode == ExitCode.RUN_CONSOLE_ENDED
    assert str(hl.offline_reason("b1")).startswith("health: 2 boot failures in a row")


def test_a_successful_run_resets_the_count(hl: HealthLab) -> None:
    hl.mode("b1", "dead")
    hl.run()
    hl.run()
    hl.mode("b1", "ok")
    assert hl.run().returncode == 0
    hl.mode("b1", "dead")
    proc = hl.run()
    assert "board failure 1 of 3 in a row" in proc.stderr, proc.stderr
    assert hl.offline_reason("b1") is None


def test_mq_online_resets_the_count(tmp_path: Path) -> None:
    hl = HealthLab(tmp_path, limit=2)
    hl.mode("b1", "dead")
    hl.run()
    hl.run()
    assert hl.offline_reason("b1") is not None
    run_mq(hl.lab, "online", "b1", check=True)
    assert not (hl.lab.base / ".mq" / "health" / "b1.json").exists()
    assert "board failure 1 of 2 in a row" in hl.run().stderr
    assert hl.offline_reason("b1") is None


@pytest.mark.parametrize(("mode", "extra", "kind", "plural", "detail"), [
    ("silent", (), "silent", "silent consoles", "the console ended before any output"),
    ("dark", ("-d", "1"), "dark", "dark boots", "no console output before the -d deadline"),
    ("ok", (), "power_off", "power_off failures", "power_off exited 1"),
])
def test_every_kind_of_board_failure_counts(tmp_path: Path, mode: str, extra: tuple[str, ...], kind: str,
                                            plural: str, detail: str) -> None:
    hl = HealthLab(tmp_path, limit=2)
    hl.mode("b1", mode)
    if kind == "power_off":
        hl.fail_power.touch()
    for _ in range(2):
        hl.run("b1", *extra)
    assert [e["outcome"] for e in hl.health_events()] == [kind, kind]
    reason = str(hl.offline_reason("b1"))
    assert reason.startswith(f"health: 2 {plural} in a row") and detail in reason, reason


def test_mixed_failures_are_board_failures(tmp_path: Path) -> None:
    hl = HealthLab(tmp_path, limit=2)
    hl.mode("b1", "dead")
    hl.run()
    hl.mode("b1", "silent")
    hl.run()
    assert str(hl.offline_reason("b1")).startswith("health: 2 board failures in a row")


def test_without_a_health_limit_nothing_is_counted(tmp_path: Path) -> None:
    hl = HealthLab(tmp_path, limit=None)
    hl.mode("b1", "dead")
    for _ in range(4):
        assert "health_limit" not in hl.run().stderr
    assert hl.offline_reason("b1") is None and hl.health_events() == []


def test_a_waiter_never_gets_the_board_that_just_broke(hl: HealthLab, procs: Procs) -> None:
    """The run's own lock becomes the maintenance lock (no moment free): a b1 waiter keeps
    waiting, a trio waiter gets a healthy member."""
    hl.mode("b1", "dead")
    hl.run()
    hl.run()
    run_mq(hl.lab, "sem", "-wait", "b2", "-k", "x", check=True)
    run_mq(hl.lab, "sem", "-wait", "b3", "-k", "x", check=True)
    hl.mode("b1", "gated")
    job = subprocess.Popen([sys.executable, "-m", "mq", "run", "-s", "b1", "-f", str(hl.image), "-c", "All is well"],
                           env=hl.lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(job)
    wait_for(lambda: "b1" in hl.lab.held(), what="the run's lock")
    board_waiter = spawn_mq(hl.lab, "sem", "-wait", "b1", "-k", "w1")
    pool_waiter = spawn_mq(hl.lab, "sem", "-wait", "trio", "-k", "w2")
    procs += [board_waiter, pool_waiter]
    wait_for(lambda: {board_waiter.pid, pool_waiter.pid} <= set(ticket_pids(hl.lab)), what="both queued")
    (hl.modes / "b1.gate").touch()
    assert job.wait(timeout=30) == ExitCode.RUN_CONSOLE_ENDED
    assert hl.offline_reason("b1") is not None
    run_mq(hl.lab, "sem", "-signal", "b2", "-k", "x", check=True)
    out, _ = pool_waiter.communicate(timeout=20)
    assert out.strip() == "b2"
    assert board_waiter.poll() is None  # still queued behind the maintenance lock
    grants = [e["board"] for e in hl.lab.audit() if e["event"] == "grant" and e.get("key") in ("w1", "w2")]
    assert grants == ["b2"]
