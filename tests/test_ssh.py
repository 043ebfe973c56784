"""The SSH transports against a real sshd on 127.0.0.1, with real Unix users."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

import conftest
from conftest import PROMPT, LabFixture, SshLab, child_named, said, wait_for
from sshd import Sshd, client_config, start_sshd

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server")


def host_agents(lab: LabFixture, user: str) -> list[str]:
    """The host-side processes of ``user`` serving ``lab`` (their command lines name its directory;
    other labs' agents, other tests' or other runs', are not this test's business)."""
    out = subprocess.run(["pgrep", "-u", user, "-af", "mq.engine.host.agent"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if str(lab.base) in line]


def test_one_connection_per_command(ssh_lab: SshLab) -> None:
    for args in (("sem", "-info", "trio"), ("sem", "-wait", "trio", "-k", "K"), ("sem", "-signal", "trio", "-k", "K"),
                 ("systems", "simple"), ("sem", "dumpall")):
        before = ssh_lab.sshd.accepted()
        proc = ssh_lab.mq("mqalice", *args)
        assert proc.returncode == 0, proc.stderr
        assert ssh_lab.sshd.accepted() - before == 1, args


def test_owner_is_the_ssh_user_and_others_cannot_release(ssh_lab: SshLab) -> None:
    assert ssh_lab.mq("mqalice", "sem", "-wait", "b1", "-k", "alice-key").returncode == 0
    assert os.stat(ssh_lab.lab.lock("b1")).st_uid == int(subprocess.check_output(["id", "-u", "mqalice"]))
    info = ssh_lab.mq("mqbob", "sem", "-info", "b1")
    assert info.stdout.startswith("Lock for b1 held by mqalice since ")
    assert "with key 'alice-key'" in info.stdout
    denied = ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-k", "alice-key")
    assert denied.returncode == 3
    assert "held by mqalice" in denied.stderr
    assert ssh_lab.lab.held() == {"b1"}
    forced = ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-f")
    assert forced.returncode == 0, forced.stderr
    assert ssh_lab.lab.held() == set()
    assert [e["event"] for e in ssh_lab.lab.audit()][-1] == "force"


def test_engine_is_cached_on_the_host_by_hash(ssh_lab: SshLab) -> None:
    from mq.transport.bundle import engine_zip

    cache = Path("/tmp/mq-home-mqcarol/.cache/mq")
    shutil.rmtree(cache, ignore_errors=True)
    assert ssh_lab.mq("mqcarol", "sem", "-info", "b1").returncode == 0
    engine = cache / f"engine-{engine_zip()[0]}"
    assert [p.name for p in cache.iterdir()] == [engine.name]
    assert (engine / "mq" / "engine" / "host" / "agent.py").exists()
    assert oct(cache.stat().st_mode & 0o777) == "0o700"  # nobody else can plant code there
    agent = engine / "mq" / "engine" / "host" / "agent.py"
    stamp = (engine.stat().st_ino, agent.stat().st_mtime_ns)
    assert ssh_lab.mq("mqcarol", "sem", "-info", "b1").returncode == 0
    assert (engine.stat().st_ino, agent.stat().st_mtime_ns) == stamp  # reused, not sent again
    assert [p.name for p in cache.iterdir()] == [engine.name]

    # engines of other versions: one unused for 40 days goes when a new engine is installed
    # (here: the current one, removed to force a fresh install); one used last week stays
    old, recent = cache / "engine-0000000000000000", cache / "engine-1111111111111111"
    for path, days in ((old, 40), (recent, 7)):
        path.mkdir()
        os.utime(path, (time.time() - days * 86400,) * 2)
    shutil.rmtree(engine)
    assert ssh_lab.mq("mqcarol", "sem", "-info", "b1").returncode == 0
    assert sorted(p.name for p in cache.iterdir()) == sorted([engine.name, recent.name])


def test_proxyjump_through_a_second_sshd(ssh_lab: SshLab, tmp_path: Path) -> None:
    jump = start_sshd(Path("/tmp") / f"mq-jump-{os.getpid()}", conftest.TEST_USERS, keys_from=ssh_lab.sshd)
    try:
        ssh_lab.known_hosts.write_text(ssh_lab.sshd.known_hosts_line() + "\n" + jump.known_hosts_line() + "\n")
        key = ssh_lab.client_dir / "id_mqalice"
        cfg = client_config(ssh_lab.sshd, "mqalice", ssh_lab.client_dir / "cfg_jump",
                            known_hosts=ssh_lab.known_hosts,
                            extra=f"  ProxyJump jumphost\nHost jumphost\n  HostName 127.0.0.1\n  Port {jump.port}\n"
                                  f"  User mqalice\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                                  f"  UserKnownHostsFile {ssh_lab.known_hosts}\n")
        before_lab, before_jump = ssh_lab.sshd.accepted(), jump.accepted()
        proc = ssh_lab.mq("mqalice", "sem", "-info", "b2", MQ_SSH_CONFIG=str(cfg))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Lock for b2 currently free")
        assert (ssh_lab.sshd.accepted() - before_lab, jump.accepted() - before_jump) == (1, 1)
    finally:
        jump.stop()


def test_nested_proxyjump_chain(ssh_lab: SshLab, tmp_path: Path) -> None:
    """labhost's ProxyJump is j2, and j2's own is j1: the path is j1 -> j2 -> labhost (as OpenSSH)."""
    j1 = start_sshd(Path("/tmp") / f"mq-j1-{os.getpid()}", conftest.TEST_USERS, keys_from=ssh_lab.sshd)
    j2 = start_sshd(Path("/tmp") / f"mq-j2-{os.getpid()}", conftest.TEST_USERS, keys_from=ssh_lab.sshd)
    try:
        ssh_lab.known_hosts.write_text("".join(s.known_hosts_line() + "\n" for s in (ssh_lab.sshd, j1, j2)))
        key = ssh_lab.client_dir / "id_mqalice"
        hop = (f"  User mqalice\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
               f"  UserKnownHostsFile {ssh_lab.known_hosts}\n")
        cfg = client_config(ssh_lab.sshd, "mqalice", ssh_lab.client_dir / "cfg_nested",
                            known_hosts=ssh_lab.known_hosts,
                            extra=f"  ProxyJump j2\nHost j2\n  HostName 127.0.0.1\n  Port {j2.port}\n  ProxyJump j1\n"
                                  f"{hop}Host j1\n  HostName 127.0.0.1\n  Port {j1.port}\n{hop}")
        before = (ssh_lab.sshd.accepted(), j1.accepted(), j2.accepted())
        proc = ssh_lab.mq("mqalice", "sem", "-info", "b2", MQ_SSH_CONFIG=str(cfg))
        assert proc.returncode == 0, proc.stderr
        after = (ssh_lab.sshd.accepted(), j1.accepted(), j2.accepted())
        assert tuple(a - b for a, b in zip(after, before, strict=True)) == (1, 1, 1)
    finally:
        j1.stop()
        j2.stop()


def test_unknown_host_key_is_refused_with_advice(ssh_lab: SshLab) -> None:
    ssh_lab.known_hosts.write_text("")
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1")
    assert proc.returncode == 9
    lines = proc.stderr.splitlines()
    assert lines[0] == "mq: Unable to ssh to labhost"
    assert "not known" in proc.stderr and "accept" in proc.stderr
    assert ssh_lab.known_hosts.read_text() == ""  # never silently added


def test_changed_host_key_is_refused_with_a_warning(ssh_lab: SshLab, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    entry = ssh_lab.sshd.known_hosts_line().split()[0]
    forged = f"{entry} " + " ".join(Path(str(other) + ".pub").read_text().split()[:2]) + "\n"
    ssh_lab.known_hosts.write_text(forged)
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1")
    assert proc.returncode == 9
    lines = proc.stderr.splitlines()
    assert lines[0] == "mq: Unable to ssh to labhost" and len(lines) == 2
    assert "CHANGED" in lines[1] and "ssh-keygen -R" in lines[1]
    assert ssh_lab.known_hosts.read_text() == forged  # never replaced


def test_as_mqsh_over_ssh_errors_keep_their_kind(ssh_lab: SshLab, tmp_path: Path) -> None:
    """Under the name mq.sh over one SSH connection: the host's errors come back as their own
    kind (wrong key, already held, not acquired, unknown name), so mq.sh's exact lines follow."""
    script = tmp_path / "mq.sh"
    script.write_text(f"#!{sys.executable}\nfrom mq.cli.launch import run\nrun()\n")
    script.chmod(0o755)

    def mqsh(user: str, *args: str) -> tuple[list[str], int]:
        proc = subprocess.run([str(script), *args], env=ssh_lab.env(user), capture_output=True, text=True,
                              timeout=30)
        return proc.stdout.splitlines(), proc.returncode

    assert mqsh("mqalice", "sem", "-wait", "b1", "-k", "ci-1", "-T", "1800") == ([], 0)
    assert mqsh("mqalice", "sem", "-wait", "b1", "-k", "ci-1") == (
        ["Attempting to grab lock you already own with the same key. Please explicitly release",
         "Failed to acquire lock for system (b1)"], 2)
    assert mqsh("mqbob", "sem", "-wait", "b1", "-t", "0") == (
        [f'lockfile: Sorry, giving up on "{ssh_lab.lab.base}/b1.lock"', "Failed to acquire lock for system (b1)"], 2)
    assert mqsh("mqalice", "sem", "-signal", "b1", "-k", "nope") == (
        ["Attempting to unlock system b1 with the wrong key!"], 0)
    assert mqsh("mqbob", "sem", "-signal", "b1") == (["Attempting to unlock system b1 that you do not hold"], 0)
    lines, code = mqsh("mqbob", "sem", "-info", "zz")
    assert (lines[0], lines[-2:], code) == ("System or pool 'zz' does not exist. Valid systems are",
                                            ["Valid pools are", "trio pair x86"], 1)
    assert mqsh("mqalice", "sem", "-signal", "b1", "-k", "ci-1") == ([], 0)
    assert ssh_lab.lab.held() == set()


def test_unable_to_ssh_first_line(ssh_lab: SshLab, tmp_path: Path) -> None:
    from sshd import free_port

    cfg = tmp_path / "dead_config"
    cfg.write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {free_port()}\n  User mqalice\n")
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_SSH_CONFIG=str(cfg))
    assert proc.returncode == 9
    assert proc.stderr.splitlines()[0] == "mq: Unable to ssh to labhost"


def test_listings_without_the_network_use_the_cached_inventory(ssh_lab: SshLab, tmp_path: Path) -> None:
    from sshd import free_port

    dead = tmp_path / "dead_config"
    dead.write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {free_port()}\n  User mqalice\n")
    never = ssh_lab.mq("mqalice", "system-tsv", MQ_SSH_CONFIG=str(dead))
    assert never.returncode == 9 and never.stderr.startswith("mq: Unable to ssh to labhost"), never  # no copy yet
    online = {verb: ssh_lab.mq("mqalice", verb) for verb in ("systems", "system-tsv", "pool-tsv", "features")}
    assert all(p.returncode == 0 for p in online.values()), online
    for verb, seen in online.items():
        offline = ssh_lab.mq("mqalice", verb, MQ_SSH_CONFIG=str(dead))
        assert (offline.returncode, offline.stdout) == (0, seen.stdout), offline
        lines = offline.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mq: labhost cannot be reached (") \
            and "listing its inventory as it was " in lines[0], offline.stderr
    mqsh = [str(Path(sys.executable).parent / "mq.sh"), "system-tsv"]
    quiet = subprocess.run(mqsh, env=ssh_lab.env("mqalice", MQ_SSH_CONFIG=str(dead)), capture_output=True, text=True,
                           timeout=30)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, online["system-tsv"].stdout, ""), quiet


def test_missing_lock_directory_on_host(ssh_lab: SshLab) -> None:
    proc = ssh_lab.mq("mqalice", "sem", "-wait", "b1", MQ_BASE="/nonexistent/mq-locks", MQ_LAB="")
    assert proc.returncode == 7, proc.stderr  # the lock directory is named missing, before the inventory in it
    assert "the lock directory does not exist" in proc.stderr
    assert "/nonexistent/mq-locks" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_kill9_of_waiting_client_cleans_up_host(ssh_lab: SshLab) -> None:
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1").returncode == 0
    waiter = ssh_lab.spawn("mqalice", "sem", "-wait", "b1", "-k", "w")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    assert host_agents(ssh_lab.lab, "mqalice")
    waiter.kill()
    waiter.wait()
    wait_for(lambda: not ssh_lab.lab.tickets() and not host_agents(ssh_lab.lab, "mqalice"), timeout=5,
             what="no ticket and no host agent left")
    assert ssh_lab.lab.held() == {"b1"}


def test_stopped_client_is_dropped_after_keepalive(ssh_lab: SshLab) -> None:
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1").returncode == 0
    waiter = ssh_lab.spawn("mqalice", "sem", "-wait", "b1")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    waiter.send_signal(signal.SIGSTOP)
    try:
        # keepalive 1 s (ServerAliveInterval): the host gives up after 3 silent seconds
        wait_for(lambda: not ssh_lab.lab.tickets() and not host_agents(ssh_lab.lab, "mqalice"), timeout=10,
                 what="the host to give up on the silent client")
    finally:
        waiter.send_signal(signal.SIGCONT)
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 9, err  # the connection was lost (what CI retries on), not a host failure
    assert "Unable to ssh to labhost" in err and "connection lost" in err, err
    assert ssh_lab.lab.held() == {"b1"}


def ctrl_c_waiter(ssh_lab: SshLab, key: str) -> pexpect.spawn:
    """mqalice waits for b1 (held by mqbob) under a pty; returns once her ticket is queued."""
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1").returncode == 0
    child = pexpect.spawn(sys.executable, ["-m", "mq", "sem", "-wait", "b1", "-k", key],
                          env=ssh_lab.env("mqalice"), timeout=10)
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    return child


def ctrl_c(child: pexpect.spawn, within: float) -> str:
    """Ctrl+C on ``child``'s terminal: it ends within ``within`` seconds, with exit 130; what it printed."""
    started = time.monotonic()
    child.sendintr()
    child.expect(pexpect.EOF)
    output = (child.before or b"").decode("utf-8", "replace")
    child.close()
    assert time.monotonic() - started < within
    assert child.exitstatus == 130
    return output


def test_ctrl_c_while_waiting_over_ssh(ssh_lab: SshLab) -> None:
    ctrl_c(ctrl_c_waiter(ssh_lab, "cc"), within=PROMPT)
    wait_for(lambda: not ssh_lab.lab.tickets(), timeout=3, what="the ticket removed")
    assert ssh_lab.lab.held() == {"b1"}


def test_ctrl_c_while_connecting(ssh_lab: SshLab, tmp_path: Path, children: list[pexpect.spawn]) -> None:
    cfg = tmp_path / "slow_config"
    cfg.write_text("Host labhost\n  ProxyCommand sleep 30\n  User mqalice\n")
    child = pexpect.spawn(sys.executable, ["-m", "mq", "sem", "-info", "b1"],
                          env=ssh_lab.env("mqalice", MQ_SSH_CONFIG=str(cfg)), timeout=10)
    children.append(child)
    wait_for(lambda: child_named(child.pid, "sleep"), what="the ProxyCommand (mq is connecting)")
    ctrl_c(child, within=PROMPT)  # not the connect timeout


def test_openssh_transport(ssh_lab: SshLab, tmp_path: Path) -> None:
    config = tmp_path / "mq.toml"
    config.write_text('transport = "openssh"\n')
    before = ssh_lab.sshd.accepted()
    proc = ssh_lab.mq("mqalice", "sem", "-wait", "pair", "-k", "o", MQ_CONFIG=str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "b3"
    assert ssh_lab.sshd.accepted() - before == 1
    info = ssh_lab.mq("mqbob", "sem", "-mr-info", "b3", MQ_CONFIG=str(config))
    assert info.stdout.startswith("b3 LOCKED mqalice ")
    assert ssh_lab.mq("mqalice", "sem", "-signal", "pair", "-k", "o", MQ_CONFIG=str(config)).returncode == 0


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_connection_failures_say_unable_to_ssh(ssh_lab: SshLab, tmp_path: Path, transport: str) -> None:
    """Every connection failure, with either transport: `Unable to ssh to HOST` first, exit 9."""
    from sshd import free_port

    config = tmp_path / "mq.toml"
    config.write_text(f'transport = "{transport}"\n')
    refused = tmp_path / "refused_config"
    refused.write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {free_port()}\n  User mqalice\n")
    cases = {"unknown host key": {}, "connection refused": {"MQ_SSH_CONFIG": str(refused)}}
    ssh_lab.known_hosts.write_text("")
    for what, extra in cases.items():
        proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_CONFIG=str(config), **extra)
        assert proc.returncode == 9, (what, proc.stderr)
        lines = proc.stderr.splitlines()
        assert lines[0] == "mq: Unable to ssh to labhost", (what, proc.stderr)
        assert len(lines) == 2 and "unexpected error" not in proc.stderr, (what, proc.stderr)


def test_fair_order_across_ssh_clients(ssh_lab: SshLab) -> None:
    assert ssh_lab.mq("mqcarol", "sem", "-wait", "b1").returncode == 0
    waiters = []
    for index, user in enumerate(("mqalice", "mqbob", "mqalice")):
        waiters.append(ssh_lab.spawn(user, "sem", "-wait", "b1", "-k", f"w{index}"))
        wait_for(lambda n=index + 1: len(ssh_lab.lab.tickets()) == n, what=f"ticket of w{index}")
    order = []
    holder, key = "mqcarol", "0"
    for _ in waiters:
        assert ssh_lab.mq(holder, "sem", "-signal", "b1", "-k", key).returncode == 0
        wait_for(lambda: ssh_lab.lab.key("b1").exists() and ssh_lab.lab.lock("b1").exists(), what="the next grant")
        key = ssh_lab.lab.key("b1").read_text().strip()
        holder = ssh_lab.mq("mqcarol", "sem", "-mr-info", "b1").stdout.split()[2]
        order.append(key)
    assert order == ["w0", "w1", "w2"]
    for proc in waiters:
        assert proc.wait(timeout=10) == 0
    assert ssh_lab.mq(holder, "sem", "-signal", "b1", "-k", key).returncode == 0


# -- fault matrix: the host side or the sshd dies, the host stalls, sshd refuses ----------------
def session_sshd(ssh_lab: SshLab, user: str) -> list[int]:
    """The per-connection sshd processes running as ``user`` (``sshd: user@notty``) of this
    test's sshd (not those of another sshd on the machine)."""
    out = subprocess.run(["pgrep", "-u", user, "-x", "sshd"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split() if ssh_lab.sshd.proc.pid in ancestors(int(pid))]


def ancestors(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError, IndexError, ValueError):
        while pid > 1:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            found.append(pid)
    return found


def test_host_agent_killed_while_waiting_is_skipped(ssh_lab: SshLab) -> None:
    """Case 6: kill -9 of the host-side process: its client says so, later waiters skip its ticket."""
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1", "-k", "hold").returncode == 0
    first = ssh_lab.spawn("mqalice", "sem", "-wait", "b1", "-k", "first")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    second = ssh_lab.spawn("mqcarol", "sem", "-wait", "b1", "-k", "second")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 2, what="the second ticket")
    for pid in host_agents(ssh_lab.lab, "mqalice"):
        os.kill(int(pid), signal.SIGKILL)
    _, err = first.communicate(timeout=10)
    assert first.returncode == 10, err
    assert "mq engine on labhost ended unexpectedly" in err
    assert ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-k", "hold").returncode == 0
    out, err = second.communicate(timeout=10)
    assert second.returncode == 0, err
    assert out.splitlines()[-1] == "b1"
    assert ssh_lab.lab.key("b1").read_text().strip() == "second"
    wait_for(lambda: not ssh_lab.lab.tickets(), timeout=5, what="the ticket removed")


def test_sshd_session_killed_while_waiting(ssh_lab: SshLab) -> None:
    """Case 8: kill -9 of the per-session sshd ends both ends and leaves no ticket."""
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1").returncode == 0
    before = set(session_sshd(ssh_lab, "mqalice"))
    waiter = ssh_lab.spawn("mqalice", "sem", "-wait", "b1", "-k", "w")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    sessions = set(session_sshd(ssh_lab, "mqalice")) - before
    assert len(sessions) == 1
    os.kill(sessions.pop(), signal.SIGKILL)
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 9, err  # the connection went, not the engine: CI retries on this
    assert said(err)[0] == "mq: Unable to ssh to labhost" and "connection lost" in err
    assert len(said(err)) == 2
    wait_for(lambda: not ssh_lab.lab.tickets() and not host_agents(ssh_lab.lab, "mqalice"), timeout=5,
             what="no ticket and no host agent left")
    assert ssh_lab.lab.held() == {"b1"}


def test_ctrl_c_while_the_host_is_stalled(ssh_lab: SshLab) -> None:
    """Case 26: Ctrl+C while the client blocks on a host that answers nothing: out within ~1 s."""
    child = ctrl_c_waiter(ssh_lab, "stall")
    agents = [int(pid) for pid in host_agents(ssh_lab.lab, "mqalice")]
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    try:
        said = ctrl_c(child, within=1.0 + PROMPT)  # the abort's 1 s grace, then out
    finally:
        for pid in agents:
            os.kill(pid, signal.SIGCONT)
    # the host never answered the abort: mq does not claim what it could not confirm
    assert "did not confirm that nothing is left held or queued" in said and "nothing left held" not in said, said
    # resumed, the host side sees the abort (or the closed connection) and cleans up
    wait_for(lambda: not ssh_lab.lab.tickets() and not host_agents(ssh_lab.lab, "mqalice"), timeout=5,
             what="no ticket and no host agent left")
    assert ssh_lab.lab.held() == {"b1"}


@pytest.fixture
def strict_sshd(sshd_server: Sshd, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    """A second sshd with the limits the test names (``@pytest.mark.parametrize(..., indirect=True)``)."""
    server = start_sshd(Path("/tmp") / f"mq-strict-{os.getpid()}", conftest.TEST_USERS, keys_from=sshd_server,
                        options=tuple(request.param))
    yield server
    server.stop()


def strict_client(ssh_lab: SshLab, server: Sshd) -> Path:
    """mqalice's ssh config for ``server`` (the ``strict_sshd``), whose host key alone is known."""
    ssh_lab.known_hosts.write_text(server.known_hosts_line() + "\n")
    return client_config(server, "mqalice", ssh_lab.client_dir / "cfg_strict", known_hosts=ssh_lab.known_hosts)


def assert_unable_to_ssh(proc: subprocess.CompletedProcess[str], reason: str) -> None:
    """Exit 9, ``Unable to ssh to labhost`` first, then one line naming ``reason``."""
    assert proc.returncode == 9, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "mq: Unable to ssh to labhost"
    assert len(lines) == 2 and reason in lines[1], lines


@pytest.mark.parametrize("strict_sshd", [("MaxSessions 0",)], indirect=True)
def test_sshd_session_limit_is_a_clear_error(ssh_lab: SshLab, strict_sshd: Sshd) -> None:
    """Case 25: sshd refuses the session channel (MaxSessions): a clear error, no hang."""
    cfg = strict_client(ssh_lab, strict_sshd)
    started = time.monotonic()
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_SSH_CONFIG=str(cfg), timeout=20)
    assert time.monotonic() - started < 10
    assert_unable_to_ssh(proc, "MaxSessions")


@pytest.mark.parametrize("strict_sshd", [("MaxStartups 1",)], indirect=True)
def test_sshd_startup_limit_is_a_clear_error(ssh_lab: SshLab, strict_sshd: Sshd) -> None:
    """Case 25: sshd drops connections beyond MaxStartups: a clear error, no hang."""
    import socket

    cfg = strict_client(ssh_lab, strict_sshd)

    def squat() -> socket.socket | None:
        """A connection that got sshd's banner: it now holds the only unauthenticated slot."""
        sock = socket.create_connection(("127.0.0.1", strict_sshd.port))
        if sock.recv(256).startswith(b"SSH-"):
            return sock
        sock.close()  # dropped: the fixture's readiness probe still held the slot
        return None

    squatter = wait_for(squat, timeout=5, step=0.1, what="sshd to give the squatter a banner")
    assert isinstance(squatter, socket.socket)
    with squatter:
        started = time.monotonic()
        proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_SSH_CONFIG=str(cfg), timeout=20)
        assert time.monotonic() - started < 10
    assert_unable_to_ssh(proc, "MaxStartups")


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_keepalives_off_in_ssh_config_still_work(ssh_lab: SshLab, tmp_path: Path, transport: str) -> None:
    """ServerAliveInterval 0 (OpenSSH's default: off): mq keeps its own 15 s keepalive."""
    config = tmp_path / "mq.toml"
    config.write_text(f'transport = "{transport}"\n')
    cfg = client_config(ssh_lab.sshd, "mqalice", tmp_path / "cfg_noalive", known_hosts=ssh_lab.known_hosts, alive=0)
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_SSH_CONFIG=str(cfg), MQ_CONFIG=str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Lock for b1 currently free")


def test_server_alive_count_max_is_honoured(ssh_lab: SshLab, tmp_path: Path) -> None:
    """Interval 1 s x CountMax 6: a client stopped for 3.5 s is not given up on (x 3 would)."""
    cfg = client_config(ssh_lab.sshd, "mqalice", tmp_path / "cfg_count", known_hosts=ssh_lab.known_hosts,
                        alive=1, alive_count=6)
    assert ssh_lab.mq("mqbob", "sem", "-wait", "b1", "-k", "hold").returncode == 0
    env = ssh_lab.env("mqalice", MQ_SSH_CONFIG=str(cfg))
    waiter = subprocess.Popen([sys.executable, "-m", "mq", "sem", "-wait", "b1", "-k", "patient"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    waiter.send_signal(signal.SIGSTOP)
    time.sleep(3.5)  # the silence under test: longer than 3 x 1 s, shorter than 6 x 1 s
    waiter.send_signal(signal.SIGCONT)
    time.sleep(0.5)  # negative check: a give-up decided during the silence would show by now
    assert len(ssh_lab.lab.tickets()) == 1 and waiter.poll() is None  # still waiting
    assert ssh_lab.mq("mqbob", "sem", "-signal", "b1", "-k", "hold").returncode == 0
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    assert out.splitlines()[-1] == "b1"


@pytest.mark.parametrize("strict_sshd", [()], indirect=True)
def test_login_noise_on_stdout_is_skipped(ssh_lab: SshLab, strict_sshd: Sshd) -> None:
    """A login that prints to stdout (motd-like text, a terminal-title escape without a
    newline) before mq's engine speaks does not break the protocol."""
    auth = strict_sshd.root / "authorized_keys" / "mqalice"
    noise = r"printf 'Welcome to the lab host\n\033]0;lab\007'; exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\""
    auth.write_text(f'command="{noise}" ' + auth.read_text())
    ssh_lab.known_hosts.write_text(strict_sshd.known_hosts_line() + "\n")
    cfg = client_config(strict_sshd, "mqalice", ssh_lab.client_dir / "cfg_noisy", known_hosts=ssh_lab.known_hosts)
    proc = ssh_lab.mq("mqalice", "sem", "-wait", "b2", "-k", "n", MQ_SSH_CONFIG=str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "b2"
    assert ssh_lab.mq("mqalice", "sem", "-signal", "b2", "-k", "n", MQ_SSH_CONFIG=str(cfg)).returncode == 0


@pytest.fixture
def agent_with_encrypted_key(ssh_lab: SshLab, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A real ssh-agent holding mqalice's key; the key file on disk is passphrase-protected."""
    key = tmp_path / "id_locked"
    shutil.copy(ssh_lab.sshd.key("mqalice"), key)
    shutil.copy(str(ssh_lab.sshd.key("mqalice")) + ".pub", str(key) + ".pub")
    os.chmod(key, 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "s3cret", "-f", str(key)], check=True)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="the agent's socket")
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho s3cret\n")
        askpass.chmod(0o755)
        env = {"SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
               "DISPLAY": ":0"}
        subprocess.run(["ssh-add", str(key)], check=True, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                       capture_output=True)
        yield key, {"SSH_AUTH_SOCK": str(sock)}
    finally:
        agent.terminate()
        agent.wait(timeout=5)


@pytest.mark.parametrize("identity", ["private", "pub"])
def test_identities_only_uses_the_matching_agent_key(ssh_lab: SshLab, tmp_path: Path, identity: str,
                                                     agent_with_encrypted_key: tuple[Path, dict[str, str]]) -> None:
    """IdentitiesOnly yes + an IdentityFile whose private key is encrypted (or only its .pub
    is named) + that key in ssh-agent: connects, as OpenSSH does."""
    key, agent_env = agent_with_encrypted_key
    named = key if identity == "private" else Path(str(key) + ".pub")
    cfg = tmp_path / "cfg_agent"
    cfg.write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {ssh_lab.sshd.port}\n  User mqalice\n"
                   f"  IdentityFile {named}\n  IdentitiesOnly yes\n  UserKnownHostsFile {ssh_lab.known_hosts}\n")
    proc = ssh_lab.mq("mqalice", "sem", "-info", "b1", MQ_SSH_CONFIG=str(cfg), **agent_env)
    assert proc.returncode == 0, proc.stderr


def test_own_hostname_with_an_ssh_config_entry_uses_ssh(ssh_lab: SshLab, tmp_path: Path) -> None:
    """MQ_HOST is this machine's name, but the ssh config says how to reach it (another user,
    port): that is SSH, not the in-process shortcut for running on the lab host."""
    import socket

    name = socket.gethostname()
    cfg = client_config(ssh_lab.sshd, "mqalice", tmp_path / "cfg_self", known_hosts=ssh_lab.known_hosts, alias=name)
    before = ssh_lab.sshd.accepted()
    proc = ssh_lab.mq("mqbob", "sem", "-wait", "b1", "-k", "self", MQ_HOST=name, MQ_SSH_CONFIG=str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert ssh_lab.sshd.accepted() - before == 1
    assert ssh_lab.lab.lock("b1").stat().st_uid == pwd.getpwnam("mqalice").pw_uid
    assert ssh_lab.mq("mqalice", "sem", "-signal", "b1", "-k", "self").returncode == 0


def test_grant_that_never_reached_its_client_is_given_back(ssh_lab: SshLab) -> None:
    """The grant is sent while the connection is stalled (its sshd stopped); the client
    gives up on the silence (exit 9). The host must not keep a lock nobody knows about."""
    assert ssh_lab.mq("mqalice", "sem", "-wait", "b1", "-k", "hold").returncode == 0
    before = set(session_sshd(ssh_lab, "mqbob"))
    waiter = ssh_lab.spawn("mqbob", "sem", "-wait", "b1", "-k", "lost")
    wait_for(lambda: len(ssh_lab.lab.tickets()) == 1, what="the waiter's ticket")
    sessions = list(set(session_sshd(ssh_lab, "mqbob")) - before)
    assert len(sessions) == 1
    os.kill(sessions[0], signal.SIGSTOP)
    try:
        assert ssh_lab.mq("mqalice", "sem", "-signal", "b1", "-k", "hold").returncode == 0
        wait_for(lambda: ssh_lab.lab.key("b1").exists() and "lost" in ssh_lab.lab.key("b1").read_text(),
                 what="the grant to the stalled client")
        _, err = waiter.communicate(timeout=15)
        assert waiter.returncode == 9, err
    finally:
        os.kill(sessions[0], signal.SIGCONT)
    wait_for(lambda: ssh_lab.lab.held() == set(), timeout=10, what="the unconfirmed grant given back")
    releases = [e for e in ssh_lab.lab.audit() if e["event"] == "release"]
    assert releases[-1]["reason"] == "client gone before receiving its grant"
