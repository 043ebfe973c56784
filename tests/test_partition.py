"""Fault cases 9 and 10 caused for real, not imitated.

Case 9, a network partition: a TCP proxy (``blackhole.BlackHole``) sits between the
client and the loopback sshd and stops forwarding without closing anything, as a
pulled cable or a firewall dropping packets would. The host must end the session
after the keepalive limit (ServerAliveInterval 1 x ServerAliveCountMax 3), free
the ticket (or the ``run`` lock, powering the board off), and the client must exit
with the connection-lost code 9 when the proxy closes or resumes.

Case 10, a holder paused past its ``-T``: another user reclaims the lock; the old
holder's later release must spare the new lock.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import test_mqsh
import test_run
from blackhole import BlackHole
from conftest import (
    LabFixture,
    Procs,
    SshLab,
    as_user,
    events,
    key_of,
    proc_state,
    queued,
    run_mq,
    said,
    spawn_mq,
    user_env,
    wait_for,
)
from sshd import client_config
from test_run import HANG_IMG, LOCK_LOST, SUCCESS, RunLab, Spawned, SshRunLab, consoles, lost_line, spawn

ssh_rl = test_run.ssh_rl  # the SSH run lab and its spawned clients, as test_run sets them up
spawned = test_run.spawned
rl = test_run.rl
mqsh = test_mqsh.mqsh  # a program named mq.sh

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server")

ALIVE, COUNT = 1, 3  # ServerAliveInterval x ServerAliveCountMax: the host gives up after 3 silent seconds
SLACK = 4.0  # what the host may take beyond that to notice and clean up


def host_agents(lab: LabFixture, user: str) -> list[str]:
    """The host-side agents of ``user`` serving ``lab`` (their command lines name its directory)."""
    out = subprocess.run(["pgrep", "-u", user, "-af", "mq.engine"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if str(lab.base) in line and line.split()[1] != "sh" and "simboard" not in line]


def through(ssh_lab: SshLab, hole: BlackHole, user: str, where: Path, **extra: str) -> dict[str, str]:
    """The environment of ``user``'s client reaching the lab through the proxy (``labhost``
    is 127.0.0.1:<proxy port>, whose host key is the sshd's), with 1 s x 3 keepalives."""
    proxied = dataclasses.replace(ssh_lab.sshd, port=hole.port)
    known = where / f"known_hosts_{hole.port}"
    known.write_text(proxied.known_hosts_line() + "\n")
    cfg = client_config(proxied, user, where / f"config_{user}_{hole.port}", known_hosts=known,
                        alive=ALIVE, alive_count=COUNT)
    return ssh_lab.env(user, MQ_SSH_CONFIG=str(cfg), **extra)


def exit_of(proc: subprocess.Popen[str], timeout: float) -> float:
    """Wait for ``proc`` to end; return when it did (time.monotonic())."""
    wait_for(lambda: proc.poll() is not None, timeout=timeout, what=f"pid {proc.pid} to exit", step=0.01)
    return time.monotonic()


# -- case 9: a real partition while waiting ------------------------------------------------------
@pytest.mark.parametrize("end", ["close", "resume"])
def test_09_partition_mid_wait_host_drops_session_client_exits_9(ssh_lab: SshLab, tmp_path: Path, procs: Procs,
                                                                   end: str) -> None:
    lab = ssh_lab.lab
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1", "-k", "hold").returncode == 0
    with BlackHole(ssh_lab.sshd.port) as hole:
        env = through(ssh_lab, hole, "mqalice", tmp_path)
        waiter = subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "cut"], env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(waiter)
        wait_for(lambda: len(lab.tickets()) == 1 and host_agents(lab, "mqalice"), what="the waiter's ticket")
        assert hole.accepted == 1  # the client really goes through the proxy

        hole.stall()
        stalled = time.monotonic()
        seen: dict[str, float] = {}

        def both_sides_done() -> bool:
            now = time.monotonic() - stalled
            if not lab.tickets() and not host_agents(lab, "mqalice"):
                seen.setdefault("host", now)
            if waiter.poll() is not None:
                seen.setdefault("client", now)
            return "host" in seen and ("client" in seen or now > ALIVE * COUNT + SLACK)

        wait_for(both_sides_done, timeout=ALIVE * COUNT + SLACK + 1, what="the host to end the partitioned session")
        ticket_gone = seen["host"]

        ended = time.monotonic()
        hole.close() if end == "close" else hole.resume()
        client_exit = exit_of(waiter, timeout=ALIVE * COUNT + SLACK) - ended
        out, err = waiter.communicate(timeout=5)
        print(f"\ncase 9 ({end}): stall -> ticket and agent gone {ticket_gone:.2f} s; stall -> client exit "
              f"{seen.get('client', -1):.2f} s (-1: not during the stall); {end} -> client exit {client_exit:.2f} s; "
              f"stderr {err!r}")
    assert waiter.returncode == 9, (out, err)  # the connection was lost: what CI retries on
    assert said(err)[0] == "mq: Unable to ssh to labhost", err
    assert "b1" not in out.split()
    # silence counts from the last keepalive heard, up to 1 s before the stall
    assert ALIVE * (COUNT - 1) <= ticket_gone <= ALIVE * COUNT + SLACK
    assert lab.held() == {"b1"} and key_of(lab, "b1") == "hold"  # bob's, untouched; alice holds nothing
    assert not [e for e in events(lab, "grant") if e.get("user") == "mqalice"]
    assert ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-k", "hold").returncode == 0
    assert lab.held() == set() and lab.tickets() == []


def test_09_short_blip_below_the_keepalive_limit_is_survived(ssh_lab: SshLab, tmp_path: Path, procs: Procs) -> None:
    """The negative check: a partition shorter than 3 x 1 s drops nothing; the wait goes on and is granted."""
    lab = ssh_lab.lab
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1", "-k", "hold").returncode == 0
    with BlackHole(ssh_lab.sshd.port) as hole:
        env = through(ssh_lab, hole, "mqalice", tmp_path)
        waiter = subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "blip"], env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(waiter)
        wait_for(lambda: len(lab.tickets()) == 1, what="the waiter's ticket")
        hole.stall()
        time.sleep(1.5)  # the silence under test: half the keepalive limit
        hole.resume()
        time.sleep(0.5)  # negative check: a give-up decided during the blip would show by now
        assert waiter.poll() is None and len(lab.tickets()) == 1
        assert ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-k", "hold").returncode == 0
        out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    assert out.splitlines()[-1] == "b1"
    assert key_of(lab, "b1") == "blip"
    assert ssh_lab.mq("mqalice", "sem", "-signal", "b1", "-k", "blip").returncode == 0


# -- case 25: connections dropped before the greeting (sshd over its MaxStartups) ----------------
def test_25_connections_dropped_before_the_greeting_are_tried_again(ssh_lab: SshLab, tmp_path: Path) -> None:
    """Two connections reset on arrival, as sshd resets those beyond MaxStartups: the third is served."""
    with BlackHole(ssh_lab.sshd.port) as hole:
        hole.drop_next = 2
        proc = subprocess.run([sys.executable, "-m", "mq", "sem", "-info", "b1"], text=True, capture_output=True,
                              env=through(ssh_lab, hole, "mqalice", tmp_path), timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Lock for b1 currently free") and proc.stderr == ""
        assert (hole.dropped, hole.accepted) == (2, 1)


def test_25_a_host_that_keeps_dropping_is_given_up_on_with_one_clear_line(ssh_lab: SshLab, tmp_path: Path) -> None:
    with BlackHole(ssh_lab.sshd.port) as hole:
        hole.drop_next, hole.drop_with_reset = 1000, False
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mq", "sem", "-info", "b1"], text=True, capture_output=True,
                              env=through(ssh_lab, hole, "mqalice", tmp_path), timeout=30)
        took = time.monotonic() - started
        assert hole.dropped == 4 and hole.accepted == 0  # a bounded number of tries...
    assert took < 6  # ... with a bounded back-off (0.25 + 0.5 + 1 s, jittered +-50 %)
    assert proc.returncode == 9
    lines = proc.stderr.splitlines()
    assert lines[0] == "mq: Unable to ssh to labhost" and len(lines) == 2, lines
    assert lines[1].startswith("mq: the host dropped the connection before its greeting, 4 tries ("), lines
    assert "banner[" not in lines[1]  # paramiko's "banner[Errno 104]" gets its separator


# -- case 9: a real partition during `mq run` on a hanging board ---------------------------------
@pytest.mark.parametrize("end", ["close", "resume"])
def test_09_partition_during_run_host_stops_console_powers_off_releases(ssh_rl: SshRunLab, spawned: list[Spawned],
                                                                          tmp_path: Path, end: str) -> None:
    rl = ssh_rl.rl
    log = rl.cwd / "console.log"
    with BlackHole(ssh_rl.sshd.port) as hole:
        env = through(ssh_rl.ssh, hole, ssh_rl.user, tmp_path)
        run = spawn(env, rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS,
                    "-f", str(rl.image("sel4test-hang")), "-l", str(log))
        wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
        assert rl.lab.held() == {"b1"} and consoles(rl.token, user=ssh_rl.user) and not rl.powered_off("b1")
        assert hole.accepted == 1

        hole.stall()
        stalled = time.monotonic()
        wait_for(lambda: rl.lab.held() == set() and rl.powered_off("b1") and not consoles(rl.token, user=ssh_rl.user),
                 timeout=ALIVE * COUNT + SLACK + 4, what="the host to stop the console, power off and release")
        released = time.monotonic() - stalled
        ssh_rl.assert_host_clean("b1", timeout=5)  # and the uploaded image deleted, the release logged as alice's
        wait_for(lambda: not host_agents(rl.lab, ssh_rl.user), timeout=5, what="the host engine to end")

        ended = time.monotonic()
        hole.close() if end == "close" else hole.resume()
        code = run.finish(timeout=ALIVE * COUNT + SLACK)
        client_exit = time.monotonic() - ended
        print(f"\ncase 9 run ({end}): stall -> lock released, console stopped, powered off {released:.2f} s; "
              f"{end} -> client exit {client_exit:.2f} s; stall -> client exit {time.monotonic() - stalled:.2f} s")
    err = run.stderr()
    assert code == 9, err
    assert "Unable to ssh to labhost" in err and "connection lost" in err, err
    assert ALIVE * (COUNT - 1) <= released <= ALIVE * COUNT + SLACK + 4
    assert str(events(rl.lab, "release")[-1]["reason"]).startswith("client gone")


# -- case 10: a holder paused past its -T ----------------------------------------------------------
HOLDER = """\
"$@" sem -wait b1 -k A -T 2 || exit 99
kill -STOP $$
"$@" sem -signal b1 -k A
echo "release exit $?"
"""


@pytest.mark.parametrize("name", ["mq", "mq.sh"])
def test_10_holder_paused_past_its_t_release_spares_the_reclaimers_lock(shared_lab: LabFixture, procs: Procs,
                                                                         mqsh: Path, name: str) -> None:
    """mqalice takes b1 with -T 2 and is paused (SIGSTOP) before her release; mqbob, waiting,
    reclaims it once the 2 s are up; resumed, alice's release must leave bob's lock alone."""
    lab = shared_lab
    program = [sys.executable, "-m", "mq"] if name == "mq" else [str(mqsh)]
    holder = procs.add_group(subprocess.Popen(
        ["sh", "-c", HOLDER, "holder", *program], env=user_env(lab.env, "mqalice"), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **as_user("mqalice")))
    wait_for(lambda: proc_state(holder.pid) == "T", what="the holder to take b1 and pause")
    assert lab.held() == {"b1"} and key_of(lab, "b1") == "A"
    taken = lab.lock("b1").lstat().st_mtime
    grant = events(lab, "grant")[-1]["grant"]

    waiter = spawn_mq(lab, "sem", "-wait", "b1", "-k", "B", user="mqbob")
    procs.append(waiter)
    _, err = waiter.communicate(timeout=15)
    assert waiter.returncode == 0, err
    reclaimed = time.time() - taken
    new_lock = lab.lock("b1").lstat()
    assert key_of(lab, "b1") == "B" and new_lock.st_uid == pwd.getpwnam("mqbob").pw_uid
    assert [(e["reason"], e["grant"], e["board"]) for e in events(lab, "reclaim")] == [("expired", grant, "b1")]

    os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate(timeout=15)
    print(f"\ncase 10 ({name}): reclaimed {reclaimed:.2f} s after the -T 2 grant; release: {out!r} {err!r}")
    if name == "mq":
        assert out.splitlines()[-1] == "release exit 3", (out, err)  # not the holder
    else:
        assert out.splitlines()[-2:] == ["Attempting to unlock system b1 that you do not hold", "release exit 0"], out
    after = lab.lock("b1").lstat()
    assert (after.st_ino, after.st_mtime_ns, after.st_uid) == (new_lock.st_ino, new_lock.st_mtime_ns, new_lock.st_uid)
    assert key_of(lab, "b1") == "B"
    assert not [e for e in events(lab, "release") if e.get("user") == "mqalice" and e.get("outcome") == "released"]
    assert run_mq(lab, "sem", "-signal", "b1", "-k", "B", user="mqbob").returncode == 0
    assert lab.held() == set() and lab.tickets() == []


def test_10_stopped_run_n_holder_past_its_t(rl: RunLab, spawned: list[Spawned]) -> None:
    """The seL4 CI's way (sem -wait -T 2, then run -n), the job SIGSTOPped past the -T: the
    next waiter reclaims; the job's host side stops the console and powers off; resumed, the
    job says its lock was taken (exit 15) and the new lock is untouched."""
    rl.mq_ok("sem", "-wait", "b1", "-k", "K", "-T", "2")
    grant = events(rl.lab, "grant")[-1]["grant"]
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-n", "-k", "K", "-c", SUCCESS,
                "-d", "30", "-f", str(HANG_IMG), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    run.proc.send_signal(signal.SIGSTOP)
    try:
        waiter = spawn(rl.lab.env, rl.cwd, spawned, "waiter", "sem", "-wait", "b1", "-k", "W")
        assert waiter.finish(timeout=15) == 0, waiter.stderr()
        new_lock = rl.lab.lock("b1").lstat()
        assert key_of(rl.lab, "b1") == "W"
        assert [(e["reason"], e["grant"]) for e in events(rl.lab, "reclaim")] == [("expired", grant)]
        wait_for(lambda: rl.powered_off("b1") and not consoles(f"{rl.home}/"), timeout=5,
                 what="the stopped job's engine to stop the console and power off")
    finally:
        run.proc.send_signal(signal.SIGCONT)
    assert run.finish(timeout=20) == LOCK_LOST, run.stderr()
    assert lost_line("b1", pwd.getpwuid(os.getuid()).pw_name) in run.stderr().splitlines(), run.stderr()
    after = rl.lab.lock("b1").lstat()
    assert (after.st_ino, after.st_mtime_ns) == (new_lock.st_ino, new_lock.st_mtime_ns)
    assert key_of(rl.lab, "b1") == "W"
    assert [e for e in events(rl.lab, "release") if e.get("outcome") == "released"] == []
    rl.mq_ok("sem", "-signal", "b1", "-k", "W")
    assert queued(rl.lab) == []
