"""``mq.sh run`` and the remaining ``mq.sh`` forms (issue 19, items 6 and 7).

Under the name ``mq.sh``, ``run`` prints mq.sh's own lines and the console and
nothing else, with mq.sh's exit codes; the CI of the seL4 device driver
framework (au-ts ``systems-ci``, ``ts_ci/backends/machine_queue.py``) drives
exactly the sequence of ``test_sddf_ci_sequence``, locally and over SSH.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import test_mqsh
import test_run
from conftest import LabFixture, engine, events, wait_for
from test_mqsh import DATE, ME, expect, run_sh
from test_run import RunLab, SshRunLab, consoles, jobs_left, needs_lockfile, write_image

mqsh = test_mqsh.mqsh  # fixtures: a program named mq.sh; a lab whose boards boot the simulator, locally and
rl = test_run.rl  # over SSH
ssh_rl = test_run.ssh_rl

KEY = "au_ts_ci-sddf-42"
STARTED = "## Starting application"  # what the sddf CI waits for (the simulated boot log prints it)


@dataclass
class Piped:
    """A ``mq.sh run`` as the sddf CI starts it: stdin a pipe, stderr merged into stdout."""

    proc: subprocess.Popen[bytes]
    chunks: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: os.read(self.proc.stdout.fileno(), 65536), b""):  # type: ignore[union-attr]
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def expect(self, line: str) -> None:
        wait_for(lambda: line in self.text, timeout=30, what=f"{line!r} in the run's output")

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return code, self.text


@pytest.fixture
def piped() -> Iterator[list[Piped]]:
    started: list[Piped] = []
    yield started
    for item in started:
        if item.proc.poll() is None:
            item.proc.kill()
        item.proc.wait(timeout=10)


def start_piped(started: list[Piped], cmd: list[str], env: dict[str, str], cwd: Path) -> Piped:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    item = Piped(proc)
    started.append(item)
    return item


def sddf_image(rl: RunLab) -> Path:
    """A board that reaches its application, then echoes what the CI types."""
    return write_image(rl.images / f"sddf-{rl.token}.img", "print sddf echo server ready", "echo")


class Client:
    """One lab, reached as the sddf CI reaches it: ``mq.sh`` with the lab's environment."""

    def __init__(self, mqsh: Path, rl: RunLab, env: dict[str, str]) -> None:
        self.mqsh, self.rl, self.env = mqsh, rl, env

    def sh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.mqsh), *args], env=self.env, cwd=self.rl.cwd, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)


def sddf_sequence(client: Client, started: list[Piped], hang_up_first: bool) -> list[tuple[str, str]]:
    """The sddf CI's steps for one test on ``b1``; returns (step, what it printed) for the record."""
    rl, board = client.rl, "b1"
    shown: list[tuple[str, str]] = []
    pick = client.sh("sem", "-mr-info", board)  # 1. pick a board: FREE / LOCKED in stdout
    assert (pick.returncode, pick.stdout, pick.stderr) == (0, f"{board} FREE\n", "")
    shown.append(("sem -mr-info b1", pick.stdout))
    lock = client.sh("sem", "-wait", board, "-k", KEY, "-T", "3600", "-t", "0")  # 2. lock, one try
    assert (lock.returncode, lock.stdout, lock.stderr) == (0, "", "")
    shown.append(("sem -wait b1 -k KEY -T 3600 -t 0", lock.stdout))
    image = sddf_image(rl)  # 3. run on the held board, no completion text, interactive, no -k
    run = start_piped(started, [str(client.mqsh), "run", "-n", "-c", "", "-a", "-f", str(image), "-s", board],
                      client.env, rl.cwd)
    run.expect(STARTED)  # 4. the application started
    run.expect("sddf echo server ready")
    run.send(b"ping from the CI\n")  # the console is the CI's from the start (-c "")
    run.expect("ping from the CI")
    if hang_up_first:
        run.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: run.proc.poll() is not None, timeout=30, what="the run to end on SIGHUP")
    release = client.sh("sem", "-signal", board, "-k", KEY)  # 5. release: must exit 0
    assert (release.returncode, release.stdout, release.stderr) == (0, "", "")
    shown.append(("sem -signal b1 -k KEY", release.stdout))
    if not hang_up_first:
        wait_for(lambda: run.proc.poll() is not None, timeout=30, what="the run to end quietly once released")
        run.proc.send_signal(signal.SIGHUP)  # 6. the CI hangs up on it anyway: nothing left to end
    code, output = run.finish()
    shown.append((f"run -n -c '' -a -f IMG -s b1 (exit {code})", output))
    assert code == (-signal.SIGHUP if hang_up_first else 0) or code == 128 + signal.SIGHUP, output
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith("mq:") or "mq: " in line], output  # nothing of mq's
    assert STARTED in output and "ping from the CI" in output
    assert "Lock acquired" not in output  # -n: mq.sh says nothing before the console
    return shown


def assert_released_not_lost(lab: LabFixture, board: str = "b1") -> None:
    assert lab.held() == set()
    releases = [e for e in events(lab, "release") if e["board"] == board and e.get("outcome") == "released"]
    assert releases and releases[-1]["key"] == KEY
    assert events(lab, "lock-lost") == []


@pytest.mark.parametrize("hang_up_first", [False, True], ids=["release-then-hangup", "hangup-then-release"])
def test_sddf_ci_sequence(mqsh: Path, rl: RunLab, piped: list[Piped], hang_up_first: bool) -> None:
    shown = sddf_sequence(Client(mqsh, rl, rl.lab.env), piped, hang_up_first)
    for step, printed in shown:
        print(f"$ mq.sh {step}\n{printed}", end="" if printed.endswith("\n") else "\n")
    assert_released_not_lost(rl.lab)
    assert rl.powered_off("b1")
    wait_for(lambda: not consoles(f"{rl.home}/"), timeout=5, what="the console to end")
    assert jobs_left(rl.home) == []


def test_sddf_ci_sequence_over_ssh(mqsh: Path, ssh_rl: SshRunLab, piped: list[Piped]) -> None:
    sddf_sequence(Client(mqsh, ssh_rl.rl, ssh_rl.env()), piped, hang_up_first=False)
    lab = ssh_rl.rl.lab
    assert_released_not_lost(lab)
    assert ssh_rl.rl.powered_off("b1")
    wait_for(lambda: not consoles(ssh_rl.rl.token, user=ssh_rl.user), timeout=10, what="the host console gone")


def test_ts_ci_run_takes_the_lock_itself(mqsh: Path, rl: RunLab, piped: list[Piped]) -> None:
    """The newer ``machine_queue.py``: ``run -c "" -a -t 0 -k KEY`` locks the board itself and
    expects mq.sh's three lines in order; then the CI kills it and releases with the key."""
    client = Client(mqsh, rl, rl.lab.env)
    run = start_piped(piped, [str(mqsh), "run", "-c", "", "-a", "-t", "0", "-k", KEY, "-f", str(sddf_image(rl)),
                              "-s", "b1"], rl.lab.env, rl.cwd)
    run.expect(STARTED)
    assert run.text.startswith("Acquiring lock for b1\nLock for b1 currently free\n"
                               "Lock acquired, we are allowed to run\n"), run.text
    run.proc.kill()
    run.finish()
    release = client.sh("sem", "-signal", "b1", "-k", KEY)
    assert release.returncode == 0 and release.stdout in ("", "Attempting to unlock system b1 that you do not hold\n")
    wait_for(lambda: rl.lab.held() == set(), timeout=10, what="the board free again")
    wait_for(lambda: rl.powered_off("b1"), timeout=10, what="the board powered off")
    assert events(rl.lab, "lock-lost") == []
    held = client.sh("run", "-c", "", "-a", "-t", "0", "-k", KEY, "-f", str(sddf_image(rl)), "-s", "b1")
    assert held.returncode == 0  # stdin is /dev/null: the interactive console ends at once, as Ctrl+D


# -- mq.sh run's own lines and exit codes ---------------------------------------------------------
def test_run_lines_for_a_board_and_a_pool(mqsh: Path, rl: RunLab) -> None:
    client = Client(mqsh, rl, rl.lab.env)
    image = rl.image("sel4test-pass")
    done = client.sh("run", "-c", "All is well", "-s", "b1", "-f", str(image))
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("Acquiring lock for b1\nLock for b1 currently free\n"
                                  "Lock acquired, we are allowed to run\n"), done.stdout
    assert done.stderr == ""
    engine(rl.lab).wait("b1", key="other")
    pool = client.sh("run", "-c", "All is well", "-s", "trio", "-f", str(image))
    assert pool.returncode == 0, pool.stdout
    head = pool.stdout.splitlines()[:3]
    member = head[0].split("'")[1]
    assert member in ("b2", "b3")
    assert head == [f"Selecting system '{member}' from pool 'trio'", f"Acquiring lock for {member}",
                    "Lock acquired, we are allowed to run"]


def test_run_reservation_lines(mqsh: Path, rl: RunLab) -> None:
    proc = subprocess.run([str(mqsh), "run", "-r", "-s", "b1"], env=rl.lab.env, cwd=rl.cwd, input="\n",
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stdout
    assert proc.stdout.splitlines() == [
        "Acquiring lock for b1", "Lock for b1 currently free", "Lock acquired, we are allowed to run",
        "This is a reservation. You now own b1 and", "can do what you want. Press ctrl+d or enter here when done",
        "Attempting to power off machine now that you are done"]
    assert rl.lab.held() == set() and rl.powered_off("b1")


def test_run_errors_one_line_exit_1(mqsh: Path, rl: RunLab) -> None:
    client = Client(mqsh, rl, rl.lab.env)
    image = str(rl.image("sel4test-pass"))
    expect(client.sh("run", "-c", "x", "-s", "b1", "-X", "-f", image), ["Unknown option -X"], 1)
    expect(client.sh("run", "-c", "x", "-s", "b1", "-f", "/nonexistent.img"),
           ['File "/nonexistent.img" either does not exist, or is not considered a valid file'], 1)
    expect(client.sh("run", "-c", "x", "-s", "x86a", "-f", image), ["Wrong number of files specified for system x86a"],
           1)
    expect(client.sh("run", "-c", "x", "-s", "b1", "-d", "soon", "-f", image), ["-d requires a number, not 'soon'"], 1)
    assert client.sh("run", "-c", "x", "-s", "nosuch", "-f", image).stdout.startswith(
        "System or pool 'nosuch' does not exist. Valid systems are\n")
    expect(client.sh("run", "-n", "-c", "x", "-s", "b1", "-f", image),
           ["Failed to run because you said you own the lock (-n flag), but you don't!"], 1)
    assert rl.lab.held() == set()


def test_run_n_checks_the_owner_not_the_key(mqsh: Path, rl: RunLab) -> None:
    client = Client(mqsh, rl, rl.lab.env)
    assert client.sh("sem", "-wait", "b1", "-k", "mine").returncode == 0
    image = str(rl.image("sel4test-pass"))
    done = client.sh("run", "-n", "-c", "All is well", "-s", "b1", "-k", "another", "-f", image)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert "All is well" in done.stdout and rl.lab.held() == {"b1"}


def test_run_that_cannot_get_the_lock(mqsh: Path, rl: RunLab) -> None:
    client = Client(mqsh, rl, rl.lab.env)
    engine(rl.lab).wait("b1", key="other")
    proc = client.sh("run", "-c", "x", "-s", "b1", "-t", "0", "-k", "mine", "-f", str(rl.image("sel4test-pass")))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 2, proc.stdout
    assert lines[0] == "Acquiring lock for b1" and lines[1].startswith("Lock for b1 held by ")
    assert lines[2:] == [f'lockfile: Sorry, giving up on "{rl.lab.base}/b1.lock"',
                         "Failed to acquire lock for system (b1)"]


# -- the remaining sem forms ------------------------------------------------------------------------
def test_usages(mqsh: Path, lab: LabFixture) -> None:
    alone = run_sh(mqsh, lab)
    assert alone.returncode == 1
    for part in ("run      Run a new job on a machine", f"{mqsh} run -r|-c", f"{mqsh} sem dumpall",
                 f"{mqsh} systems [help|simple]"):
        assert part in alone.stdout, part
    sem = run_sh(mqsh, lab, "sem")
    assert sem.returncode == 1
    lines = sem.stdout.splitlines()
    assert lines[0] == "Unknown usage" and lines[2] == f"{mqsh} sem dumpall"
    assert lines[-2:] == [" dumpall          Prints all currently locked systems", ""]
    no_name = run_sh(mqsh, lab, "sem", "-signal", "-k", "k1")
    assert no_name.returncode == 1 and no_name.stdout.splitlines()[0] == "Unknown option k1"


@needs_lockfile
def test_bare_lockfile_lock_shows_the_empty_key(mqsh: Path, lab: LabFixture) -> None:
    subprocess.run(["lockfile", "-r0", str(lab.base / "b1.lock")], check=True)
    info = run_sh(mqsh, lab, "sem", "-info", "b1").stdout
    assert re.fullmatch(rf"Lock for b1 held by {ME} since {DATE}, timeout \S* with key ''\n", info), info
    mr = run_sh(mqsh, lab, "sem", "-mr-info", "b1").stdout
    assert mr.endswith(" \n") and len(mr.split(" ")) == 7, repr(mr)


def test_pool_wait_that_gives_up_names_the_member(mqsh: Path, lab: LabFixture) -> None:
    eng = engine(lab)
    for board in ("b1", "b2", "b3"):
        eng.wait(board, key="hold")
    proc = run_sh(mqsh, lab, "sem", "-wait", "trio", "-t", "0")
    member = proc.stdout.splitlines()[0]
    assert member in ("b1", "b2", "b3")
    expect(proc, [member, f'lockfile: Sorry, giving up on "{lab.base}/{member}.lock"',
                  f"Failed to acquire lock for system ({member})"], 2)


def test_dates_in_the_lab_hosts_zone(mqsh: Path, ssh_rl: SshRunLab) -> None:
    """The client in UTC+11, the lab host in UTC: -info, -mr-info and dumpall say +0000 as mq.sh does."""
    env = {**ssh_rl.env(), "TZ": "XYZ-11"}
    client = Client(mqsh, ssh_rl.rl, env)
    assert client.sh("sem", "-wait", "b1", "-k", "k").returncode == 0
    for args in (("sem", "-info", "b1"), ("sem", "-mr-info", "b1"), ("sem", "dumpall")):
        out = client.sh(*args).stdout
        assert " +0000" in out and "+1100" not in out, (args, out)
    local = subprocess.run(["date", "+%z"], env=env, capture_output=True, text=True).stdout.strip()
    assert local == "+1100"  # the client's zone really differs
    assert client.sh("sem", "-signal", "b1", "-k", "k").returncode == 0


def test_mq_takes_an_empty_completion_text_too(rl: RunLab) -> None:
    """``mq run -c ""`` is mq.sh's command line, so mq takes it as well: no completion text, the
    console's end is the job's end (exit 0); and a ``-n`` job whose lock its holder releases
    with the key ends quietly, audited as a release."""
    done = rl.mq("run", "-c", "", "-s", "b1", "-f", str(rl.image("sel4test-pass")))
    assert done.returncode == 0, done.stderr
    assert "All is well" in done.stdout
    rl.assert_clean("b1")
    rl.mq_ok("sem", "-wait", "b2", "-k", KEY)
    log = rl.cwd / "held.log"
    job = subprocess.Popen([*test_run.MQ, "run", "-n", "-k", KEY, "-c", "never printed", "-s", "b2", "-l", str(log),
                            "-f", str(rl.image("sel4test-hang"))], env=rl.lab.env, cwd=rl.cwd,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
        rl.mq_ok("sem", "-signal", "b2", "-k", KEY)
        _, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    assert "mq: b2: its lock was released (sem -signal with its key); job ended" in err
    assert_released_not_lost(rl.lab, "b2")
    assert rl.powered_off("b2")
