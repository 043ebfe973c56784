"""Shared fixtures: isolation from the developer's home, real lab directories,
real Unix test users, a runner for the real ``mq`` command, the one ``wait_for``
every test polls with, the children a test starts (killed at the end), and a
real sshd with a lab reached through it."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from mq.engine.core.inventory import load_inventory
from mq.engine.lockdir.semaphore import Engine
from sshd import SSHD, Sshd, client_config, start_sshd

SRC = str(Path(__file__).resolve().parent.parent / "src")
TEST_GROUP = "mqlab"
TEST_USERS = ("mqalice", "mqbob", "mqcarol")

LAB_TOML = textwrap.dedent(
    """
    [systems.b1]
    arch = "arm"
    soc = "imx8"
    [systems.b2]
    arch = "arm"
    soc = "imx8"
    [systems.b3]
    arch = "arm"
    soc = "imx8"
    [systems.solo]
    arch = "riscv"
    [systems.x86a]
    arch = "x86"
    files = 2
    pxe_linux = true
    [systems.x86b]
    arch = "x86"
    files = 2
    dtb = true

    [pools.trio]
    match = { soc = "imx8" }
    [pools.pair]
    systems = ["b3", "solo"]
    [pools.x86]
    match = { arch = "x86" }
    """
)


CHILD_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ignore_here(signum: int, frame: object) -> None:
    """Stands in for SIG_IGN in the test process itself (see ``pytest_configure``)."""


def pytest_configure(config: pytest.Config) -> None:
    """Every child a test starts begins with SIGINT, SIGTERM and SIGHUP at their defaults,
    however the suite was started. A shell that runs pytest in the background, or
    ``nohup``, ignores INT and HUP, and an ignored signal is inherited through fork and
    exec: mq rightly keeps such a signal ignored, so every Ctrl+C, TERM and HUP test would
    fail. A signal the suite was started ignoring gets a handler that does nothing instead:
    the test process still shrugs it off, and exec gives the children the default (a
    caught signal is reset by exec, an ignored one is not). Blocked signals are unblocked
    for the same reason. Tests about inherited ignored signals set SIG_IGN in the child
    themselves (``preexec_fn``)."""
    for signum in CHILD_DEFAULT_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, _ignore_here)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_DEFAULT_SIGNALS)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME; no MQ_* or SSH variables leak in."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith(("MQ_", "SSH_", "XDG_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", SRC)
    monkeypatch.setenv("TZ", "UTC")
    return home


@dataclass
class LabFixture:
    base: Path
    inventory_file: Path | None = None  # a shared lab's inventory, outside its lock directory (MQ_LAB)

    @property
    def inventory(self) -> Path:
        """The lab's inventory file: ``BASE/lab.toml`` unless it lives elsewhere."""
        return self.inventory_file or self.base / "lab.toml"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"MQ_HOST": "local", "MQ_BASE": str(self.base)})
        if self.inventory_file is not None:
            env["MQ_LAB"] = str(self.inventory_file)
        return env

    def lock(self, board: str) -> Path:
        return self.base / f"{board}.lock"

    def key(self, board: str) -> Path:
        return self.base / f"{board}.key"

    def held(self) -> set[str]:
        return {p.name[: -len(".lock")] for p in self.base.glob("*.lock")}

    def tickets(self) -> list[str]:
        queue = self.base / ".mq" / "queue"
        return sorted(p.name for p in queue.iterdir()) if queue.exists() else []

    def audit_tolerant(self) -> list[dict[str, object]]:
        """The audit records, skipping lines that are not one (a test planted some)."""
        import json

        path = self.base / "audit.jsonl"
        found = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def audit(self) -> list[dict[str, object]]:
        import json

        path = self.base / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def key_of(lab: LabFixture, board: str) -> str | None:
    """The key stored with ``board``'s lock (None when there is no key file)."""
    try:
        return lab.key(board).read_text().strip()
    except FileNotFoundError:
        return None


def events(lab: LabFixture, kind: str) -> list[dict[str, object]]:
    """The audit records of one kind (``grant``, ``release``, ``reclaim`` ...), oldest first."""
    return [e for e in lab.audit() if e["event"] == kind]


def make_lab(path: Path, shared: bool = False) -> LabFixture:
    """A lock directory with the test inventory. A shared one (group-writable, setgid) has
    the inventory mq reads where no member can replace it, as docs/security.md asks:
    root-owned 0644 in a root-owned 0755 directory beside it, named by MQ_LAB (and a copy
    in the lock directory, which only the engines a test's own scripts make read)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "lab.toml").write_text(LAB_TOML)  # what engines made in a test's own scripts read
    if not shared:
        return LabFixture(base=path)
    os.chown(path, 0, grp.getgrnam(TEST_GROUP).gr_gid)
    os.chmod(path, 0o2775)
    os.chmod(path / "lab.toml", 0o644)
    etc = path.parent / f"{path.name}-etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    os.chmod(etc, 0o755)
    (etc / "lab.toml").write_text(LAB_TOML)
    os.chmod(etc / "lab.toml", 0o644)
    # every parent must be traversable by the test users
    for parent in path.parents:
        if str(parent).startswith("/tmp/") or str(parent) == "/tmp":
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    return LabFixture(base=path, inventory_file=etc / "lab.toml")


@pytest.fixture
def lab(tmp_path: Path) -> LabFixture:
    """A private lock directory with the test inventory (boards b1-b3, solo, x86a/b)."""
    return make_lab(tmp_path / "lab")


def run_mq(lab: LabFixture, *args: str, user: str | None = None, timeout: float = 30,
           check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real ``mq`` CLI in a new process (optionally as a test user)."""
    proc = subprocess.run([sys.executable, "-m", "mq", *args], env=user_env(lab.env, user), capture_output=True,
                          text=True, timeout=timeout, **as_user(user))
    if check and proc.returncode != 0:
        raise AssertionError(f"mq {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def spawn_mq(lab: LabFixture, *args: str, user: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mq", *args], env=user_env(lab.env, user), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **as_user(user))


def user_env(env: dict[str, str], user: str | None) -> dict[str, str]:
    """The environment for a child run as ``user``: its own empty HOME."""
    if user is None:
        return env
    entry = pwd.getpwnam(user)
    home = Path("/tmp") / f"mq-home-{user}"
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return {**env, "HOME": str(home), "USER": user, "LOGNAME": user}


def as_user(user: str | None) -> dict[str, object]:
    """Popen keyword arguments that run a child as a test user (root only)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [grp.getgrnam(TEST_GROUP).gr_gid],
            "umask": 0o022}


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """One test process at a time (pytest-xdist workers too) for something the whole machine
    shares: the user database, ``/etc/mq``."""
    import fcntl

    with open(f"/tmp/mq-tests-{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_users() -> bool:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        return False
    with machine_lock("users"):
        return _make_users()


def _make_users() -> bool:
    try:
        grp.getgrnam(TEST_GROUP)
    except KeyError:
        subprocess.run(["groupadd", TEST_GROUP], check=True)
    for user in TEST_USERS:
        home = f"/tmp/mq-home-{user}"
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-g", TEST_GROUP, "-s", "/bin/sh", "-d", home, user], check=True)
        # a real home (for the engine cache over SSH) and an unlocked account (sshd refuses "!")
        subprocess.run(["usermod", "-d", home, "-p", "*", user], check=True)
        entry = pwd.getpwnam(user)
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    _make_reachable(os.path.realpath(sys.executable))
    _make_reachable(SRC)
    return True


def _make_reachable(path: str) -> None:
    """Let the test users traverse to the interpreter and the source (CI machine is throwaway)."""
    for parent in Path(path).parents:
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


@pytest.fixture(scope="session")
def test_users() -> tuple[str, ...]:
    """Real Unix users in one group (created when running as root, as CI does)."""
    if not _ensure_users():
        pytest.skip("needs root to create test users")
    return TEST_USERS


@pytest.fixture
def shared_lab(test_users: tuple[str, ...], tmp_path: Path) -> Iterator[LabFixture]:
    """A group-writable (setgid) lock directory shared by the test users."""
    root = Path("/tmp") / f"mq-shared-{os.getpid()}-{tmp_path.name}"
    lab = make_lab(root / "lab", shared=True)
    os.chmod(root, 0o755)
    yield lab
    shutil.rmtree(root, ignore_errors=True)


# -- shared helpers for tests that watch real processes --------------------------------
PROMPT = 5.0
"""Seconds within which "at once" must happen in a test: a hand-off to the next waiter,
the end of a command after Ctrl+C. Not the figure mq achieves (milliseconds, measured by
benchmarks/), but a bound that holds on a machine busy with other work and still fails
anything that waits for time: lockfile's 8 s sleep, mq's own periodic look (60 s), a
command that sits out its connection timeout."""
def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition",
             step: float = 0.01) -> object:
    """Poll ``cond`` until it is truthy and return its value; fail with ``what`` after
    ``timeout`` seconds. The one way tests wait for another process: never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def settled(sample: Callable[[], object], quiet: float = 0.2) -> Callable[[], bool]:
    """A ``wait_for`` condition: true once ``sample()`` has returned the same value for
    ``quiet`` seconds (a process's CPU time or wake-ups that stopped changing)."""
    seen: object = object()
    since = time.monotonic()

    def steady() -> bool:
        nonlocal seen, since
        value, now = sample(), time.monotonic()
        if value != seen:
            seen, since = value, now
        return now - since >= quiet

    return steady


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ... (empty if gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def proc_state(pid: int) -> str:
    """The one-letter state of ``pid`` (``S`` asleep, ``R`` running, ``T`` stopped, ``Z``...), or ``X`` if gone."""
    return (proc_stat(pid) or ["X"])[0]


def child_named(pid: int, name: str) -> int | None:
    """A child of ``pid`` whose command name (``comm``) is ``name``, if one runs."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_stat(int(entry))[1:2] == [str(pid)]:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    return int(entry)
    return None


def engine(lab: LabFixture) -> Engine:
    """The engine in the test process itself (root): a fast, real holder/releaser."""
    return Engine(str(lab.base), load_inventory(str(lab.inventory)))


def queued(lab: LabFixture) -> list[str]:
    """Tickets fully queued, in arrival order (not ``.new-`` files mid-enqueue, not ``.cancel`` marks)."""
    return [name for name in lab.tickets() if name.startswith("T") and "." not in name]


def ticket_pids(lab: LabFixture) -> list[int]:
    """Pids of the queued tickets, in arrival (sequence) order."""
    return [int(name.rsplit("-", 1)[1]) for name in queued(lab)]


class Procs(list[subprocess.Popen[str]]):
    """Children a test started; ``add_group`` is for one that leads a session of its own
    (``start_new_session=True``), whose whole process group goes with it at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: set[int] = set()

    def add_group(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self.append(proc)
        self.groups.add(proc.pid)
        return proc


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Children started by a test; any still running at the end are killed (with the
    process group of those added with ``add_group``: their own children too)."""
    started = Procs()
    yield started
    for proc in started:
        if proc.pid in started.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def children() -> Iterator[list[pexpect.spawn]]:
    """pexpect children a test spawns; any still alive at the end are killed."""
    started: list[pexpect.spawn] = []
    yield started
    for child in started:
        if child.isalive():
            child.terminate(force=True)


# -- a real sshd, and a shared lab reached through it ---------------------------------------
def processes_naming(path: Path) -> list[int]:
    """Live processes (any user, never this one) whose command line mentions ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.fsencode(str(path)) in Path(f"/proc/{entry}/cmdline").read_bytes() \
                    and proc_state(int(entry)) not in ("Z", "X"):
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(scope="session")
def sshd_server(test_users: tuple[str, ...]) -> Iterator[Sshd]:
    """One real sshd on 127.0.0.1 for the whole run, with a key for each test user."""
    if not Path(SSHD).exists():
        pytest.skip("needs openssh-server")
    server = start_sshd(Path("/tmp") / f"mq-sshd-{os.getpid()}", test_users)
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@dataclass
class SshLab:
    """A shared lab on the sshd's host, and a client side (ssh config, known_hosts, HOME) of its own."""

    lab: LabFixture
    sshd: Sshd
    client_dir: Path
    known_hosts: Path

    def env(self, user: str, **extra: str) -> dict[str, str]:
        """The environment of an ``mq`` client reaching the lab as ``user`` (host alias ``labhost``)."""
        cfg = client_config(self.sshd, user, self.client_dir / f"config_{user}", known_hosts=self.known_hosts)
        env = dict(os.environ)
        env.update({"MQ_HOST": "labhost", "MQ_BASE": str(self.lab.base), "MQ_SSH_CONFIG": str(cfg),
                    "MQ_LAB": str(self.lab.inventory), "HOME": str(self.client_dir)})
        env.update(extra)
        return env

    def mq(self, user: str, *args: str, timeout: float = 30, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mq", *args], env=self.env(user, **extra),
                              capture_output=True, text=True, timeout=timeout)

    def spawn(self, user: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mq", *args], env=self.env(user), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kill_host_side(self) -> None:
        """SIGKILL what a test left running on the host for this lab (the agents' command
        lines name its directory); nothing of other labs, tests or runs."""
        for pid in processes_naming(self.lab.base):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ssh_lab(sshd_server: Sshd, tmp_path: Path) -> Iterator[SshLab]:
    """A fresh shared lab on the sshd's host; at the end its host-side processes are killed
    and the lab is removed."""
    lab = make_lab(sshd_server.root / f"lab-{tmp_path.name}", shared=True)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    known = client_dir / "known_hosts"
    known.write_text(sshd_server.known_hosts_line() + "\n")
    ssh_lab = SshLab(lab=lab, sshd=sshd_server, client_dir=client_dir, known_hosts=known)
    yield ssh_lab
    ssh_lab.kill_host_side()
    shutil.rmtree(lab.base, ignore_errors=True)
    shutil.rmtree(lab.inventory.parent, ignore_errors=True)


@pytest.fixture(params=["standard", "tomli"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the TOML parser this Python uses, and again with tomli (Python < 3.11)."""
    import tomli

    from mq.engine.core import tomlparse

    if request.param == "tomli":
        monkeypatch.setattr(tomlparse, "loads", tomli.loads)
        monkeypatch.setattr(tomlparse, "TOMLDecodeError", tomli.TOMLDecodeError)
    return str(request.param)


WAITING_LINES = ("mq: waiting: ", "mq: queue moved: ", "mq: still waiting: ")  # mq.views.waitline, in a log


def said(err: str) -> list[str]:
    """The stderr lines of an ``mq`` command, without its waiting line's."""
    return [line for line in err.splitlines() if not line.startswith(WAITING_LINES)]
