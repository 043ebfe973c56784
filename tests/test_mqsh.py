"""Invoked as ``mq.sh``: stdout and exit codes exactly as ``mq.sh`` master prints them.

Each case is a row of the table "Exact behaviour under the ``mq.sh`` name" in
``shared/reference/mq-sh.md`` (the contract, measured against the real tool).
The commands run in real processes through a program file named ``mq.sh``,
as the installed console script is.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    PROMPT,
    LabFixture,
    Procs,
    as_user,
    engine,
    events,
    run_mq,
    spawn_mq,
    ticket_pids,
    user_env,
    wait_for,
)

ME = pwd.getpwuid(os.getuid()).pw_name
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000"
SYSTEMS = ["b1", "b2", "b3", "solo", "x86a", "x86b"]


@pytest.fixture
def mqsh() -> Iterator[Path]:
    """A program named ``mq.sh`` that starts mq, as the ``mq.sh`` console script does
    (in a directory the test users can reach)."""
    folder = Path(tempfile.mkdtemp(prefix="mq-bin-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "mq.sh"
    path.write_text(f"#!{sys.executable}\nfrom mq.cli.launch import run\nrun()\n")
    path.chmod(0o755)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def run_sh(mqsh: Path, lab: LabFixture | None, *args: str, env: dict[str, str] | None = None,
           user: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    the_env = dict(env if env is not None else lab.env if lab is not None else os.environ)
    return subprocess.run([str(mqsh), *args], env=user_env(the_env, user), capture_output=True, text=True,
                          timeout=timeout, **as_user(user))


def expect(proc: subprocess.CompletedProcess[str], lines: list[str], code: int) -> None:
    assert (proc.stdout.splitlines(), proc.returncode) == (lines, code), proc.stderr


# -- rows of the contract ------------------------------------------------------------
def test_quiet_successes(mqsh: Path, lab: LabFixture) -> None:
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "K"), [], 0)  # no board name after a board wait
    assert lab.lock("b1").exists()
    expect(run_sh(mqsh, lab, "sem", "-signal", "b1", "-k", "K"), [], 0)
    assert not lab.lock("b1").exists()
    expect(run_sh(mqsh, lab, "sem", "-wait", "b2"), [], 0)
    expect(run_sh(mqsh, lab, "sem", "-signal", "b2", "-f"), [], 0)
    expect(run_sh(mqsh, lab, "sem", "-signal", "b2", "-f"), [], 0)  # forcing a free lock: quiet too
    expect(run_sh(mqsh, lab, "sem", "-cancel", "b1", "-k", "K"), [], 0)
    assert lab.held() == set()


def test_pool_wait_prints_the_member(mqsh: Path, lab: LabFixture) -> None:
    proc = run_sh(mqsh, lab, "sem", "-wait", "pair", "-k", "K")
    assert (proc.returncode, proc.stdout) == (0, "b3\n"), proc.stderr  # every member free: the first
    assert lab.held() == {"b3"}


def test_wait_that_fails(mqsh: Path, lab: LabFixture) -> None:
    engine(lab).wait("b1", key="other")
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "mine", "-t", "0"),
           [f'lockfile: Sorry, giving up on "{lab.base}/b1.lock"', "Failed to acquire lock for system (b1)"], 2)
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "mine", "-w", "0.1", "-t", "2"),
           [f'lockfile: Sorry, giving up on "{lab.base}/b1.lock"', "Failed to acquire lock for system (b1)"], 2)
    assert lab.tickets() == []


def test_wait_on_a_lock_you_hold(mqsh: Path, lab: LabFixture) -> None:
    run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "K")
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "K"),
           ["Attempting to grab lock you already own with the same key. Please explicitly release",
            "Failed to acquire lock for system (b1)"], 2)
    run_sh(mqsh, lab, "sem", "-wait", "b2")
    expect(run_sh(mqsh, lab, "sem", "-wait", "b2"),
           ["Attempting to grab lock you already own. Please explicitly release",
            "Failed to acquire lock for system (b2)"], 2)
    assert lab.held() == {"b1", "b2"}


def test_signal_of_what_you_do_not_hold(mqsh: Path, lab: LabFixture) -> None:
    expect(run_sh(mqsh, lab, "sem", "-signal", "b1"), ["Attempting to unlock system b1 that you do not hold"], 0)
    run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "K")
    expect(run_sh(mqsh, lab, "sem", "-signal", "b1", "-k", "wrong"),
           ["Attempting to unlock system b1 with the wrong key!"], 0)
    expect(run_sh(mqsh, lab, "sem", "-signal", "b1"), ["Attempting to unlock system b1 with the wrong key!"], 0)
    assert lab.held() == {"b1"}


def test_signal_of_another_users_lock(mqsh: Path, shared_lab: LabFixture, test_users: tuple[str, ...]) -> None:
    alice, bob = test_users[:2]
    expect(run_sh(mqsh, shared_lab, "sem", "-wait", "b1", user=alice), [], 0)
    expect(run_sh(mqsh, shared_lab, "sem", "-signal", "b1", user=bob),
           ["Attempting to unlock system b1 that you do not hold"], 0)
    assert shared_lab.held() == {"b1"}
    expect(run_sh(mqsh, shared_lab, "sem", "-signal", "b1", "-f", user=bob), [], 0)
    assert shared_lab.held() == set()


def test_unknown_system_or_pool(mqsh: Path, lab: LabFixture) -> None:
    for action in ("-wait", "-info", "-signal", "-mr-info", "-cancel"):
        expect(run_sh(mqsh, lab, "sem", action, "nope"),
               ["System or pool 'nope' does not exist. Valid systems are", *SYSTEMS, "Valid pools are",
                "trio pair x86"], 1)


def test_usage_errors(mqsh: Path, lab: LabFixture) -> None:
    proc = run_sh(mqsh, lab, "sem", "-info", "b1", "-X")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "Unknown option -X"
    assert lines[1].startswith(f"{mqsh} sem -signal|-wait|-cancel|-info SYSTEM"), lines[1]
    proc = run_sh(mqsh, lab, "sem", "b1")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "Unknown usage"
    assert proc.stdout.splitlines()[1].startswith(str(mqsh))
    proc = run_sh(mqsh, lab, "sem", "-info")
    assert (proc.stdout, proc.returncode) == ("", 2) and proc.stderr.strip()
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-T", "abc"), ["-T <timeout> requires a positive integer"], 1)
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-T", "-5"), ["-T <timeout> requires a positive integer"], 1)
    assert lab.held() == set()


def test_info_lines(mqsh: Path, lab: LabFixture) -> None:
    expect(run_sh(mqsh, lab, "sem", "-info", "b1"), ["Lock for b1 currently free"], 0)
    expect(run_sh(mqsh, lab, "sem", "-mr-info", "b1"), ["b1 FREE"], 0)
    run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "job 42", "-T", "1800")
    run_sh(mqsh, lab, "sem", "-wait", "b2")
    engine(lab).wait("trio", key="w")  # a waiter: mq shows it, mq.sh does not
    keyed = run_sh(mqsh, lab, "sem", "-info", "b1")
    assert keyed.returncode == 0 and len(keyed.stdout.splitlines()) == 1
    assert re.fullmatch(f"Lock for b1 held by {ME} since {DATE}, timeout 1800 with key 'job 42'\n", keyed.stdout)
    plain = run_sh(mqsh, lab, "sem", "-info", "b2")
    assert re.fullmatch(f"Lock for b2 held by {ME} since {DATE}, timeout 0\n", plain.stdout), plain.stdout
    mr = run_sh(mqsh, lab, "sem", "-mr-info", "b2").stdout
    assert re.fullmatch(f"b2 LOCKED {ME} {DATE}\n", mr) and len(mr.split()) == 6
    mr = run_sh(mqsh, lab, "sem", "-mr-info", "b1").stdout
    assert re.fullmatch(f"b1 LOCKED {ME} {DATE} job 42\n", mr)


def test_dumpall_lists_every_lock_in_directory_order(mqsh: Path, lab: LabFixture) -> None:
    for board in ("x86b", "b2", "solo"):
        run_sh(mqsh, lab, "sem", "-wait", board)
    (lab.base / "retired.lock").write_text("0")  # a board no longer in the inventory, locked by lockfile
    order = [e.name[:-5] for e in os.scandir(lab.base) if e.name.endswith(".lock")]
    proc = run_sh(mqsh, lab, "sem", "dumpall")
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == order
    assert all(len(line.split()) == 6 for line in proc.stdout.splitlines())


def test_pool_info_names_a_member_first(mqsh: Path, lab: LabFixture) -> None:
    run_sh(mqsh, lab, "sem", "-wait", "b3")
    expect(run_sh(mqsh, lab, "sem", "-info", "pair"), ["solo", "Lock for solo currently free"], 0)
    expect(run_sh(mqsh, lab, "sem", "-mr-info", "pair"), ["solo", "solo FREE"], 0)


def test_the_seL4_ci_sequence(mqsh: Path, lab: LabFixture) -> None:
    """The sem steps the seL4 CI runs, and what it reads from stdout."""
    expect(run_sh(mqsh, lab, "sem", "-info", "b1"), ["Lock for b1 currently free"], 0)
    expect(run_sh(mqsh, lab, "sem", "-wait", "b1", "-k", "ci-123", "-T", "1800"), [], 0)
    expect(run_sh(mqsh, lab, "sem", "-cancel", "b1", "-k", "ci-123"), [], 0)
    expect(run_sh(mqsh, lab, "sem", "-signal", "b1", "-k", "ci-123"), [], 0)
    expect(run_sh(mqsh, lab, "sem", "-info", "b1"), ["Lock for b1 currently free"], 0)


# -- configuration ---------------------------------------------------------------------
def test_reads_dot_mq_and_runs_on_the_host_itself(mqsh: Path, lab: LabFixture, isolated_env: Path) -> None:
    """``~/.mq`` names this very host: the locks are used directly, as mq.sh's RemoteCommand does."""
    (isolated_env / ".mq").write_text(f"HOST={socket.getfqdn()}\nBASE={lab.base}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    expect(run_sh(mqsh, None, "sem", "-wait", "b1", env=env), [], 0)
    assert lab.held() == {"b1"}


def test_no_configuration_is_mqsh_host_never_the_demo_lab(mqsh: Path, isolated_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    env["MQ_SSH_CONFIG"] = str(isolated_env / "ssh_config")  # unreachable: connection refused at once
    (isolated_env / "ssh_config").write_text(f"Host *\n  HostName 127.0.0.1\n  Port {_free_port()}\n")
    proc = run_sh(mqsh, None, "sem", "-info", "odroidc4_1", env=env)
    expect(proc, ["Unable to ssh to tftp.keg.cse.unsw.edu.au"], 1)
    assert not (isolated_env / ".local" / "share" / "mq").exists()


def test_ssh_failure_on_stdout_with_host_as_configured(mqsh: Path, isolated_env: Path) -> None:
    (isolated_env / ".mq").write_text("HOST=ci@labhost\nBASE=/var/cache/machinelocks\n")
    (isolated_env / "ssh_config").write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {_free_port()}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
    env["MQ_SSH_CONFIG"] = str(isolated_env / "ssh_config")
    for args in (("sem", "-info", "b1"), ("sem", "-wait", "b1", "-k", "K", "-T", "1800"), ("systems",)):
        expect(run_sh(mqsh, None, *args, env=env), ["Unable to ssh to ci@labhost"], 1)
    # under the name mq: stderr, exit 9 (mq's own, distinct code)
    proc = subprocess.run([sys.executable, "-m", "mq", "sem", "-info", "b1"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert (proc.stdout, proc.returncode) == ("", 9)
    assert proc.stderr.splitlines()[0] == "mq: Unable to ssh to ci@labhost"


def test_installed_console_script_is_mqsh(lab: LabFixture) -> None:
    script = Path(sys.executable).parent / "mq.sh"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project (pip install -e '.[test]')")
    proc = subprocess.run([str(script), "sem", "-info", "b1", "-X"], env=lab.env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and proc.stdout.splitlines()[0] == "Unknown option -X"


def test_mq_keeps_its_own_behaviour(lab: LabFixture) -> None:
    """Under the name mq: diagnostics on stderr, distinct exit codes, grant and waiters shown."""
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    again = run_mq(lab, "sem", "-wait", "b1", "-k", "K")
    assert (again.stdout, again.returncode) == ("", 4) and again.stderr
    info = run_mq(lab, "sem", "-info", "b1").stdout.splitlines()
    assert info[0].endswith("with key 'K'") and info[1].strip().startswith("grant #")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- mq.sh -cancel and mq waiters (issue 19, item 5) ------------------------------------------------
def mqsh_cancel(lab: LabFixture, name: str, key: str) -> subprocess.CompletedProcess[str]:
    """Exactly what ``mq.sh sem -cancel NAME -k KEY`` runs on the lab host."""
    return subprocess.run(["pkill", "-u", ME, "-f", f"lockfile.*'{key}' > '{lab.base}/{name}.key'"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("cancelled", ["b1", "trio"])
def test_mqsh_cancel_ends_an_mq_waiter(mqsh: Path, lab: LabFixture, procs: Procs, cancelled: str) -> None:
    """An mq waiter (under the name mq.sh, as a script that switched would start it) for a
    pool: mq.sh's cancel of the pool, or of a member, ends it as it would end mq.sh's own."""
    eng = engine(lab)
    for board in ("b1", "b2", "b3"):
        eng.wait(board, key="hold", budget=0)
    waiter = subprocess.Popen([str(mqsh), "sem", "-wait", "trio", "-k", "ci-42"], env=lab.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(waiter)
    wait_for(lambda: waiter.pid in ticket_pids(lab) and mqsh_cancel_targets(lab, cancelled, "ci-42"),
             what="the waiter and the process mq.sh's cancel looks for")
    assert mqsh_cancel(lab, cancelled, "ci-42").returncode == 0  # pkill found something to end
    out, _ = waiter.communicate(timeout=2 * PROMPT)
    member = out.splitlines()[0]  # as mq.sh: the member it names, then its failure (no lockfile line: cancelled)
    assert member in ("b1", "b2", "b3"), out
    assert (waiter.returncode, out.splitlines()) == (2, [member, f"Failed to acquire lock for system ({member})"])
    assert lab.tickets() == [] and lab.held() == {"b1", "b2", "b3"}
    assert [e.get("by") for e in events(lab, "cancel")] == ["mq.sh -cancel"]
    assert mqsh_cancel_targets(lab, cancelled, "ci-42") == []  # nothing left behind


def test_a_waiter_that_ends_leaves_no_sentinel(lab: LabFixture, procs: Procs) -> None:
    eng = engine(lab)
    eng.wait("b1", key="hold", budget=0)
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "k")
    procs.append(waiter)
    wait_for(lambda: mqsh_cancel_targets(lab, "b1", "k"), what="the waiter's sentinel")
    eng.signal("b1", key="hold")
    out, _ = waiter.communicate(timeout=2 * PROMPT)
    assert (waiter.returncode, out) == (0, "b1\n")
    wait_for(lambda: mqsh_cancel_targets(lab, "b1", "k") == [], what="the sentinel gone with its wait")
    # mq's own cancel ends mq waiters through their tickets: the sentinel is not counted as an mq.sh waiter
    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "k2")
    procs.append(waiter)
    wait_for(lambda: mqsh_cancel_targets(lab, "b1", "k2"), what="the second waiter's sentinel")
    cancel = run_mq(lab, "sem", "-cancel", "b1", "-k", "k2", "--json")
    assert json.loads(cancel.stdout)["data"]["count"] == 1, cancel.stdout
    assert waiter.wait(timeout=2 * PROMPT) == 2


def mqsh_cancel_targets(lab: LabFixture, name: str, key: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"lockfile.*'{key}' > '{lab.base}/{name}.key'"], capture_output=True,
                           text=True)
    return found.stdout.split()
