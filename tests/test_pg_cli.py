"""The queue in PostgreSQL through the CLI (issue 13): ``backend`` in the configuration, ``mq admin
init`` and ``load-inventory``, every command on the database, and ``run`` on a pool whose members
hang off two lab hosts (this machine, and a real sshd as another user), each job going to its
board's own host while the lock comes from the database.

A real PostgreSQL server (``pgserver``), a real sshd (``conftest.sshd_server``), real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pgserver
from conftest import PROMPT, SshLab, wait_for
from mq.engine.core.errors import ExitCode

pytestmark = pytest.mark.skipif(pgserver.missing(), reason="needs the PostgreSQL server binaries")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIM = 'boot = "{python} -m mq.engine.host.simboard {system} {files}"\n'


@dataclass
class PgLab:
    conninfo: str
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"MQ_BACKEND": self.conninfo, "MQ_CONFIG": str(self.root / "config.toml"),
                    "HOME": str(self.root / "home")})
        env.update(extra)
        return env

    def mq(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mq", *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)

    def ok(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = self.mq(*args, **extra)
        assert proc.returncode == 0, f"mq {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def spawn(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mq", *args], env=self.env(**extra), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.root)

    def waiting(self) -> list[str]:
        data = json.loads(self.ok("status", "--json").stdout)["data"]
        return [w["key"] for board in data for w in board["waiters"]]

    def write_lab(self, text: str) -> Path:
        path = self.root / "lab.toml"
        path.write_text(textwrap.dedent(text))
        return path


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PgLab]:
    server = pgserver.shared_server()
    name = "mqcli_" + uuid.uuid4().hex[:12]
    conninfo = server.create_database(name)
    (tmp_path / "home").mkdir()
    (tmp_path / "config.toml").write_text("")
    yield PgLab(conninfo, tmp_path)
    server.drop_database(name)


TWO_BOARDS = """
    [systems.b1]
    soc = "imx8"
    [systems.b2]
    soc = "imx8"
    [pools.pair]
    match = { soc = "imx8" }
    """


def test_admin_init_is_versioned_and_idempotent_and_load_inventory_checks_first(pg: PgLab) -> None:
    first = pg.ok("admin", "init", "--json")
    assert json.loads(first.stdout)["data"]["before"] == 0
    again = pg.ok("admin", "init", "--json")
    data = json.loads(again.stdout)["data"]
    assert data["before"] == data["version"] >= 1 and "already at version" in again.stderr
    broken = pg.write_lab('[systems.b1]\nboot = "{sytem}"\n')
    proc = pg.mq("admin", "load-inventory", str(broken))
    assert proc.returncode == ExitCode.CONFIG and "unknown placeholder {sytem}" in proc.stderr
    assert pg.mq("systems").returncode == ExitCode.CONFIG  # still nothing stored
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    listed = json.loads(pg.ok("systems", "--json").stdout)["data"]
    assert [s["name"] for s in listed["systems"]] == ["b1", "b2"]
    assert [(p["name"], p["members"]) for p in listed["pools"]] == [("pair", ["b1", "b2"])]


def test_unreachable_or_empty_database_is_one_clear_line(pg: PgLab, tmp_path: Path) -> None:
    proc = pg.mq("sem", "-info", "b1")
    assert proc.returncode == ExitCode.CONFIG and "mq admin init" in proc.stderr, proc.stderr
    pg.ok("admin", "init")
    proc = pg.mq("sem", "-info", "b1")
    assert proc.returncode == ExitCode.CONFIG and "mq admin load-inventory" in proc.stderr, proc.stderr
    gone = pg.mq("sem", "-info", "b1", MQ_BACKEND=f"host={tmp_path}/nowhere port=1 dbname=x", MQ_DB_RETRY="0")
    assert gone.returncode != 0 and "cannot reach the queue database" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1
    patient = pg.mq("sem", "-info", "b1", MQ_BACKEND=f"host={tmp_path}/nowhere port=1 dbname=x", MQ_DB_RETRY="1")
    lines = patient.stderr.strip().splitlines()  # it said it would try again, then gave up
    assert patient.returncode != 0 and len(lines) == 2 and "trying again for up to 1 s" in lines[0], lines
    bad = pg.mq("sem", "-info", "b1", MQ_BACKEND="mysql://db")
    assert bad.returncode == ExitCode.CONFIG and "backend" in bad.stderr


def test_sem_status_history_and_fair_order_on_the_database(pg: PgLab) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    assert pg.ok("sem", "-wait", "pair", "-k", "one").stdout.strip() == "b1"
    assert pg.ok("sem", "-wait", "pair", "-k", "two").stdout.strip() == "b2"
    waiters = []
    for key in ("w1", "w2"):
        waiters.append(pg.spawn("sem", "-wait", "pair", "-k", key))
        wait_for(lambda key=key: key in pg.waiting(), what=f"{key} queued")
    assert pg.waiting() == ["w1", "w2", "w1", "w2"]  # both boards list both, in queue order
    info = pg.ok("sem", "-info", "b1").stdout
    assert "waiting 1: " in info and "key 'w1'" in info
    pg.ok("sem", "-signal", "b2", "-k", "two")
    out, _ = waiters[0].communicate(timeout=20)
    assert out.strip() == "b2"
    assert waiters[1].poll() is None
    pg.ok("sem", "-signal", "b1", "-k", "one")
    out, _ = waiters[1].communicate(timeout=20)
    assert out.strip() == "b1"
    history = pg.ok("history", "--json").stdout
    events = [e["event"] for e in json.loads(history)["data"]]
    assert events.count("grant") == 4 and events.count("release") == 2


def test_ctrl_c_and_kill_leave_no_ticket_in_the_database(pg: PgLab) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(textwrap.dedent(TWO_BOARDS) + "[queue]\ngrace = 4\n")))
    pg.ok("sem", "-wait", "b1", "-k", "hold")
    interrupted = pg.spawn("sem", "-wait", "b1", "-k", "ctrl-c")
    killed = pg.spawn("sem", "-wait", "b1", "-k", "killed")
    wait_for(lambda: {"ctrl-c", "killed"} <= set(pg.waiting()), what="both queued")
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=20) == 130
    assert pg.waiting() == ["killed"]  # a Ctrl+C'd wait takes its ticket with it at once
    killed.kill()
    killed.wait(timeout=10)
    # killed while the server stayed up: dead at once, whatever the grace period (only a
    # server restart makes a client's place wait for it)
    wait_for(lambda: pg.waiting() == [], timeout=PROMPT, what="the dead waiter cleared at once")
    pg.ok("sem", "-signal", "b1", "-k", "hold")
    assert pg.ok("sem", "-wait", "b1", "-k", "next", "-t", "0").stdout.strip() == "b1"


@pytest.mark.slow
def test_a_pool_across_two_lab_hosts_runs_each_job_on_its_boards_host(pg: PgLab, ssh_lab: SshLab) -> None:
    """b1 hangs off this machine (host = "local"), b2 off the sshd's host (reached as mqalice)."""
    marks = ssh_lab.lab.base / "marks"  # where both hosts' users can write (the shared lab directory)
    marks.mkdir()
    os.chmod(marks, 0o777)
    script = ssh_lab.lab.base / "power.sh"
    script.write_text('touch "$1/off-$2-$(id -un)"\n')
    os.chmod(script, 0o755)
    power = f'power_off = "sh {script} {marks} {{system}}"\n'
    systems = "".join(f'[systems.{board}]\nsoc = "imx8"\nhost = "{host}"\n{SIM}{power}'
                      for board, host in (("b1", "local"), ("b2", "labhost")))
    lab = pg.write_lab(systems + '[pools.pair]\nmatch = { soc = "imx8" }\n')
    image = pg.root / "pass.img"
    shutil.copy(EXAMPLES / "sel4test-pass.img", image)
    os.chmod(image, 0o644)
    env = {k: v for k, v in ssh_lab.env("mqalice").items() if k.startswith("MQ_SSH") or k == "HOME"}
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(lab))
    pg.ok("sem", "-wait", "b1", "-k", "hold", **env)
    far = pg.mq("run", "-s", "pair", "-f", str(image), "-c", "All is well", "--json", **env)
    assert far.returncode == 0, far.stderr
    summary = json.loads(far.stdout)["data"]
    assert summary["board"] == "b2" and summary["result"] == "completed"
    assert "running on b2" in far.stderr and "Test suite passed" in far.stderr
    assert (marks / "off-b2-mqalice").exists(), far.stderr  # powered off on its host, as the user it knows
    pg.ok("sem", "-signal", "b1", "-k", "hold", **env)
    pg.ok("sem", "-wait", "b2", "-k", "hold", **env)
    near = pg.mq("run", "-s", "pair", "-f", str(image), "-c", "All is well", **env)
    assert near.returncode == 0 and "running on b1" in near.stderr, near.stderr
    assert (marks / "off-b1-root").exists()  # here, by this machine's user
    held = json.loads(pg.ok("sem", "-info", "pair", "--json").stdout)["data"]
    assert {b["board"]: b["state"] for b in held} == {"b1": "free", "b2": "locked"}
    grants = [e for e in json.loads(pg.ok("history", "--json").stdout)["data"] if e["event"] == "grant"]
    assert [e["board"] for e in grants] == ["b1", "b2", "b2", "b1"]


def test_every_listing_and_the_mq_sh_name_work_on_the_database(pg: PgLab, tmp_path: Path) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    program = tmp_path / "bin" / "mq.sh"  # the mq.sh console script's name: mq.sh's stdout and exit codes
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\nfrom mq.cli.launch import run\nrun()\n")
    program.chmod(0o755)
    legacy = subprocess.run([str(program), "sem", "-wait", "b1", "-k", "ci"], env=pg.env(), capture_output=True,
                            text=True, timeout=60)
    assert legacy.returncode == 0 and legacy.stdout == "", legacy
    mr = subprocess.run([str(program), "sem", "-mr-info", "b1"], env=pg.env(), capture_output=True, text=True,
                        timeout=60)
    assert mr.returncode == 0 and mr.stdout.startswith("b1 LOCKED ") and mr.stdout.rstrip().endswith(" ci"), mr
    holders = json.loads(pg.ok("holders", "--older-than", "0s", "--json").stdout)["data"]
    assert [(h["board"], h["key"]) for h in holders] == [("b1", "ci")]
    pg.ok("offline", "b2", "--reason", "new firmware")
    refused = pg.mq("sem", "-wait", "b2", "-t", "0")
    assert refused.returncode == ExitCode.BOARD_OFFLINE and "new firmware" in refused.stderr
    skipped = pg.mq("sem", "-wait", "pair", "-k", "p", "-t", "0")  # b1 held, b2 offline: the pool has none
    assert skipped.returncode == ExitCode.NOT_ACQUIRED and "b2 offline: new firmware" in skipped.stderr
    pg.ok("online", "b2")
    pg.ok("sem", "-signal", "b1", "-k", "ci")
    stats = json.loads(pg.ok("stats", "--json").stdout)["data"]
    assert {b["board"]: b["grants"] for b in stats["boards"]}["b1"] == 1  # the mq.sh name's grant, from the table
    kinds = {e["event"] for e in json.loads(pg.ok("history", "--json").stdout)["data"]}
    assert {"grant", "release", "offline", "online"} <= kinds


def test_a_database_restart_while_waiting_is_told_and_loses_nothing(pg: PgLab) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    pg.ok("sem", "-wait", "b1", "-k", "hold")
    first = pg.spawn("sem", "-wait", "b1", "-k", "first")
    wait_for(lambda: pg.waiting() == ["first"], what="first queued")
    second = pg.spawn("sem", "-wait", "b1", "-k", "second")
    wait_for(lambda: pg.waiting() == ["first", "second"], what="second queued")
    pgserver.shared_server().restart()
    assert pg.waiting() == ["first", "second"]  # the tickets and the holder's lock survived
    assert "b1 LOCKED " in pg.ok("sem", "-mr-info", "b1").stdout
    wait_for(lambda: first.poll() is None and second.poll() is None, what="waiters still waiting")
    pg.ok("sem", "-signal", "b1", "-k", "hold")
    out, err = first.communicate(timeout=60)
    assert out.strip() == "b1", err
    assert "mq: lost the database connection" in err and "mq: reconnected after" in err, err
    assert second.poll() is None
    pg.ok("sem", "-signal", "b1", "-k", "first")
    out, _ = second.communicate(timeout=60)
    assert out.strip() == "b1"


def test_mq_check_looks_at_the_database_and_never_prints_a_password(pg: PgLab) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    backend = pg.conninfo + " password=s3cret"  # trust auth: the password is not needed, only shown
    proc = pg.mq("check", "--host", MQ_BACKEND=backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "queue in PostgreSQL" in proc.stdout and "password=***" in proc.stdout
    assert "s3cret" not in proc.stdout + proc.stderr
    assert ": ok (2 systems, 1 pool)" in proc.stdout
    assert "database: reachable: ok (schema up to date, inventory of 2 systems; lab hosts (for run): local)" \
        in proc.stdout
    budget = re.search(r"database: connections: ok \(max_connections (\d+) \((\d+) reserved\), (\d+) in use "
                       r"\((\d+) by mq\): room for (\d+) more waiting clients \(2 connections each\)\)", proc.stdout)
    assert budget is not None, proc.stdout
    most, reserved, in_use, by_mq, room = (int(g) for g in budget.groups())
    assert by_mq >= 1 and room == (most - reserved - in_use) // 2


def test_run_held_and_reserve_on_the_database(pg: PgLab) -> None:
    """-n runs on a board the caller holds (the lock stays); -r reserves one until Enter/Ctrl+D
    (here: end of input at once); both boot on the board's host (this machine)."""
    lab = pg.write_lab(TWO_BOARDS.replace('soc = "imx8"\n', 'soc = "imx8"\n    ' + SIM, 2))
    image = pg.root / "pass.img"
    shutil.copy(EXAMPLES / "sel4test-pass.img", image)
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(lab))
    refused = pg.mq("run", "-s", "b1", "-n", "-k", "mine", "-f", str(image), "-c", "All is well")
    assert refused.returncode == ExitCode.NOT_HOLDER, refused.stderr
    pg.ok("sem", "-wait", "b1", "-k", "mine")
    held = pg.mq("run", "-s", "b1", "-n", "-k", "mine", "-f", str(image), "-c", "All is well")
    assert held.returncode == 0 and "Test suite passed" in held.stdout, held.stderr
    assert "b1 LOCKED " in pg.ok("sem", "-mr-info", "b1").stdout  # -n keeps the lock
    reserved = subprocess.run([sys.executable, "-m", "mq", "run", "-s", "pair", "-r"], env=pg.env(),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert reserved.returncode == 0 and "b2 is yours" in reserved.stderr, reserved.stderr
    states = {b["board"]: b["state"] for b in json.loads(pg.ok("sem", "-info", "pair", "--json").stdout)["data"]}
    assert states == {"b1": "locked", "b2": "free"}


# -- a run's lock while its job runs (pgengine.runwatch) ----------------------------------------
RUN_LAB = """
[systems.b1]
soc = "imx8"
{sim}power_off = "touch {marks}/off-{{system}}"
[queue]
grace = 4
"""


def long_run(pg: PgLab, seconds: float) -> tuple[Path, Path]:
    """A lab whose b1 boots a job lasting ``seconds`` (grace 4 s, power_off leaves a mark); the
    image, and the directory of the marks."""
    marks = pg.root / "marks"
    marks.mkdir()
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(RUN_LAB.format(sim=SIM, marks=marks))))
    image = pg.root / "slow.img"
    image.write_text(f"print Starting test suite\nsleep {seconds}\npass\n")
    return image, marks


def running(pg: PgLab, run: subprocess.Popen[str]) -> None:
    def booted() -> bool:
        assert run.poll() is None, run.communicate()
        return "b1 LOCKED " in pg.ok("sem", "-mr-info", "b1").stdout
    wait_for(booted, what="the run's lock on b1")


def test_a_run_keeps_its_board_through_a_database_restart(pg: PgLab) -> None:
    """The job makes no database calls while it runs, but its lock's watch reconnects at once
    and takes the lock's owner back: the waiter (grace 4 s) gets b1 only after the job ends."""
    image, _ = long_run(pg, 10)
    run = pg.spawn("run", "-s", "b1", "-k", "job", "-f", str(image), "-c", "All is well")
    running(pg, run)
    waiter = pg.spawn("sem", "-wait", "b1", "-k", "next")
    wait_for(lambda: pg.waiting() == ["next"], what="the waiter queued")
    pgserver.shared_server().restart()
    time.sleep(4 + 2)  # past the grace period: the waiter's client has looked at the run's owner by now
    assert run.poll() is None and waiter.poll() is None
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0 and "All is well in the universe" in out, err  # the job ran to its end
    assert "mq: lost the database connection" in err and "mq: reconnected after" in err, err
    assert waiter.communicate(timeout=30)[0].strip() == "b1"
    events = [e for e in json.loads(pg.ok("history", "--json").stdout)["data"] if e.get("board") == "b1"]
    kinds = [(e["event"], e.get("key")) for e in events if e["event"] in ("grant", "release", "reclaim")]
    assert kinds == [("grant", "job"), ("release", "job"), ("grant", "next")], kinds


def test_a_run_whose_lock_is_taken_away_stops_and_says_how(pg: PgLab) -> None:
    """sem -signal -f on a running job's lock: the job stops within seconds, the board is
    powered off, the next waiter has it, and the run says who and how (exit 15)."""
    image, marks = long_run(pg, 60)
    run = pg.spawn("run", "-s", "b1", "-k", "job", "-f", str(image), "-c", "All is well")
    running(pg, run)
    waiter = pg.spawn("sem", "-wait", "b1", "-k", "next")
    wait_for(lambda: pg.waiting() == ["next"], what="the waiter queued")
    started = time.monotonic()
    pg.ok("sem", "-signal", "b1", "-f")
    assert waiter.communicate(timeout=30)[0].strip() == "b1"
    _, err = run.communicate(timeout=30)
    assert time.monotonic() - started < 10, err
    assert run.returncode == ExitCode.RUN_LOCK_LOST, err
    user = pg.ok("sem", "-mr-info", "b1").stdout.split()[2]
    # "lost" when the job's watch looked between the release and the waiter's grant
    assert re.search(rf"mq: the lock for b1 was (lost|taken by {user}) \(released by {user} with sem -signal -f\); "
                     "job stopped, board powered off\n", err), err
    assert (marks / "off-b1").exists()
    assert pg.ok("sem", "-mr-info", "b1").stdout.rstrip().endswith(" next")  # the waiter's lock was left alone


def test_a_big_upload_shows_its_progress_once_the_boards_host_is_known(pg: PgLab) -> None:
    """The upload waits for the lock (it decides the host); on a terminal its bar is then shown."""
    import pexpect

    from test_run import big_image

    long_run(pg, 0)
    child = pexpect.spawn(sys.executable, ["-m", "mq", "run", "-s", "b1", "-f", str(big_image(pg.root / "big.img")),
                                           "-c", "All is well"], env=pg.env(), cwd=str(pg.root), encoding="utf-8",
                          timeout=60, dimensions=(24, 200))
    try:
        child.expect("mq: running on b1")
        child.expect("uploading images")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0 and "All is well in the universe" in (child.before or ""), child.before


# -- secrets, malformed strings, versions (issue 21) ------------------------------------------
@pytest.mark.parametrize(("backend", "wrong"), [
    ("postgresql://u@h:notaport/db", "invalid integer value \"notaport\" for connection option \"port\""),
    ("postgresql://u@h/db?nosuchoption=1", "invalid URI query parameter: \"nosuchoption\""),
    ("host=h dbname", "missing \"=\" after \"dbname\""),
    ("host=h wrongkey=1", "invalid connection option \"wrongkey\""),
])
def test_a_malformed_backend_string_is_a_configuration_error_naming_the_part(pg: PgLab, backend: str,
                                                                             wrong: str) -> None:
    proc = pg.mq("sem", "-info", "b1", MQ_BACKEND=backend)
    assert proc.returncode == ExitCode.CONFIG, proc
    assert wrong in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    admin = pg.mq("admin", "init", "--backend", backend)
    assert admin.returncode == ExitCode.CONFIG and wrong in admin.stderr, admin.stderr


def test_a_password_is_refused_where_others_can_read_it(pg: PgLab) -> None:
    secret = "s3cr3t-pw"  # noqa: S105 - what must never be shown
    with_password = f"postgresql://someone:{secret}@127.0.0.1:1/db"
    proc = pg.mq("admin", "init", "--backend", with_password)
    assert proc.returncode == ExitCode.CONFIG and "~/.pgpass" in proc.stderr and "(ps)" in proc.stderr, proc.stderr
    assert secret not in proc.stderr + proc.stdout
    config = pg.root / "config.toml"
    config.write_text(f'backend = "{with_password}"\n')
    config.chmod(0o644)
    readable = pg.mq("sem", "-info", "b1", MQ_BACKEND="")
    assert readable.returncode == ExitCode.CONFIG, readable
    assert "readable by others (mode 0644)" in readable.stderr and f"chmod 600 {config}" in readable.stderr
    assert secret not in readable.stderr + readable.stdout
    config.chmod(0o600)  # private now: taken (and the password still never shown)
    private = pg.mq("sem", "-info", "b1", MQ_BACKEND="", MQ_DB_RETRY="0")
    assert "readable by others" not in private.stderr and secret not in private.stderr + private.stdout
    keywords = pg.mq("sem", "-info", "b1", MQ_BACKEND=f"host=127.0.0.1 port=1 password={secret}", MQ_DB_RETRY="0")
    assert secret not in keywords.stderr + keywords.stdout  # the environment is this user's alone: allowed


def test_versions_that_work_together(pg: PgLab) -> None:
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    import psycopg

    from mq.pgengine import schema

    with psycopg.connect(pg.conninfo, autocommit=True) as conn:  # a newer mq's init: schema + 1, still serving us
        conn.execute("INSERT INTO mq_schema (version) VALUES (%s)", (schema.VERSION + 1,))
        conn.execute("UPDATE mq_compat SET installed_by = '9.9.9'")
    pg.ok("sem", "-info", "b1")  # one version older than the schema: served
    refused = pg.mq("admin", "init")
    assert refused.returncode == ExitCode.CONFIG, refused
    assert f"at schema version {schema.VERSION + 1} (installed by mq 9.9.9)" in refused.stderr
    assert "refusing to downgrade (install mq 9.9.9 or newer)" in refused.stderr
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:  # ... and one that no longer serves us
        conn.execute("UPDATE mq_compat SET min_client = %s", (schema.VERSION + 1,))
    old = pg.mq("sem", "-info", "b1")
    assert old.returncode == ExitCode.LOCKDIR, old
    assert "is too old for the database" in old.stderr and "install mq 9.9.9 or newer" in old.stderr, old.stderr


def _loads_psycopg(pg: PgLab, *args: str) -> bool:
    """Whether ``mq ARGS`` imported psycopg (``-X importtime`` lists every module it imports)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mq", *args], env=pg.env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done
    return any(line.rstrip().endswith("| psycopg") for line in done.stderr.splitlines())


def test_a_command_that_only_looks_reads_through_libpq_alone(pg: PgLab) -> None:
    """``import psycopg`` costs more than a whole ``sem -info`` on the file engine: the commands that
    only look read through libpq itself (``pgengine.reader``); one that changes the queue loads it."""
    pg.ok("admin", "init")
    pg.ok("admin", "load-inventory", str(pg.write_lab(TWO_BOARDS)))
    pg.ok("sem", "-wait", "b1", "-k", "held")
    for args in (("sem", "-info", "b1"), ("sem", "-mr-info", "pair"), ("status",), ("history",), ("sem", "dumpall")):
        assert not _loads_psycopg(pg, *args), args
    assert pg.ok("sem", "-info", "b1").stdout.startswith("Lock for b1 held by ")
    assert _loads_psycopg(pg, "sem", "-signal", "b1", "-k", "held")
