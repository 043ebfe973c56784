"""Read-only commands in a lock directory whose ``.mq/`` another user made private.

A ``.mq/`` created before the directory was shared (mode 700, another owner)
hides the queue and the grant records, not the locks and keys: ``-info``,
``-mr-info``, pool ``-info`` and ``dumpall`` show the locks, leave out the
waiters and grant numbers, and say so in one line on stderr, locally and
over SSH alike. Commands that change the queue say why they cannot (exit 7).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import LabFixture, SshLab, run_mq, spawn_mq, wait_for
from mq.engine.core.errors import ExitCode

Mq = Callable[..., subprocess.CompletedProcess[str]]
READ_ONLY = (("sem", "-info", "b1"), ("sem", "-mr-info", "b1"), ("sem", "-info", "trio"), ("sem", "dumpall"),
             ("sem", "-info", "trio", "--json"), ("sem", "dumpall", "--json"))


def hide_state(base: Path, owner: str, directory: str = ".mq") -> None:
    """``directory`` (under the lock directory) private to ``owner``, as if made before sharing."""
    path = base / directory
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o700)


def notice(base: Path, what: str, shown: str, where: str = ".mq") -> str:
    return f"mq: cannot read {what} in {base / where} (permission denied): {shown} not shown"


def take_boards(mq: Mq) -> None:
    """mqalice holds b1 (key k1) and a trio member; mqcarol waits for b1."""
    assert mq("mqalice", "sem", "-wait", "b1", "-k", "k1").returncode == 0
    assert mq("mqalice", "sem", "-wait", "trio").returncode == 0


def check_read_only(mq: Mq, info_notice: str, dump_notice: str, waiters_hidden: bool, grants_hidden: bool) -> None:
    """Every read-only command as mqbob: exit 0, the locks shown, what is hidden left out, and
    the notice (``info_notice``; ``dump_notice`` for dumpall, which shows no waiters) once."""
    for args in READ_ONLY:
        proc = mq("mqbob", *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        expected = dump_notice if args[1] == "dumpall" else info_notice
        assert proc.stderr.splitlines() == ([expected] if expected else []), (args, proc.stderr)
        if "--json" in args:
            states = json.loads(proc.stdout)["data"]
            b1 = next(s for s in states if s["board"] == "b1")
            assert b1["holder"]["user"] == "mqalice" and b1["holder"]["key"] == "k1"
            assert (b1["holder"]["grant"] is None) == grants_hidden
            assert b1.get("unread", "") == expected.removeprefix("mq: ")
            if args[1] == "-info":
                assert (b1["waiters"] == []) == waiters_hidden
        elif args[1] == "-info":
            assert "Lock for b1 held by mqalice since" in proc.stdout and "with key 'k1'" in proc.stdout
            assert ("grant #" in proc.stdout) != grants_hidden
            assert ("waiting 1: mqcarol" in proc.stdout) != waiters_hidden, proc.stdout
        else:
            assert "b1 LOCKED mqalice" in proc.stdout and proc.stdout.splitlines()[0].endswith(" k1")


def local(lab: LabFixture) -> Mq:
    return lambda user, *args: run_mq(lab, *args, user=user)


@pytest.fixture
def waiting_carol(shared_lab: LabFixture) -> subprocess.Popen[str]:
    take_boards(local(shared_lab))
    proc = spawn_mq(shared_lab, "sem", "-wait", "b1", user="mqcarol")
    wait_for(shared_lab.tickets, what="mqcarol's ticket")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def test_private_state_dir_hides_waiters_and_grants_not_locks(shared_lab: LabFixture,
                                                              waiting_carol: subprocess.Popen[str]) -> None:
    mq = local(shared_lab)
    try:
        check_read_only(mq, "", "", waiters_hidden=False, grants_hidden=False)  # all readable: all shown
        hide_state(shared_lab.base, "mqalice")
        check_read_only(mq, notice(shared_lab.base, "the queue and the grant records", "waiters and grant numbers"),
                        notice(shared_lab.base, "the grant records", "grant numbers"),
                        waiters_hidden=True, grants_hidden=True)
    finally:
        stop(waiting_carol)


def test_private_queue_only_hides_waiters(shared_lab: LabFixture, waiting_carol: subprocess.Popen[str]) -> None:
    hide_state(shared_lab.base, "mqalice", ".mq/queue")
    try:
        check_read_only(local(shared_lab), notice(shared_lab.base, "the queue", "waiters", ".mq/queue"), "",
                        waiters_hidden=True, grants_hidden=False)
    finally:
        stop(waiting_carol)


def test_changes_in_a_private_state_dir_say_why(shared_lab: LabFixture) -> None:
    mq = local(shared_lab)
    take_boards(mq)
    hide_state(shared_lab.base, "mqalice")
    for args in (("sem", "-wait", "b3", "-t", "0"), ("sem", "-cancel", "b3"), ("sem", "-signal", "b1", "-f")):
        proc = mq("mqbob", *args)
        assert proc.returncode == ExitCode.LOCKDIR, (args, proc.stderr)
        assert "Permission denied" in proc.stderr and "unexpected" not in proc.stderr
    assert shared_lab.held() == {"b1", "b2"}


def test_private_state_dir_over_ssh(ssh_lab: SshLab) -> None:
    """The engine runs on the host; what it could not read crosses the wire with the states."""
    base = ssh_lab.lab.base
    take_boards(ssh_lab.mq)
    hide_state(base, "mqalice")
    check_read_only(ssh_lab.mq, notice(base, "the queue and the grant records", "waiters and grant numbers"),
                    notice(base, "the grant records", "grant numbers"), waiters_hidden=True, grants_hidden=True)
