"""The engine bundle and its bootstrap (mq.transport.bundle, mq.transport.bootstrap).

The bootstrap is run as SSH runs it, ``sh -c COMMAND``, with the protocol on
the child's stdin and stdout: no sshd needed. Failures are told by exit
status, never by the text the host printed.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import conftest
from conftest import LAB_TOML, as_user, wait_for
from mq.transport import bootstrap, bundle
from mq.transport.base import AgentClient, HostError, HostGaveUp
from mq.transport.pipe import PipeStream
from mq.transport.remote import start_agent

PYTHON39 = next((p for p in ("/root/.pyenv/versions/3.9.18/bin/python3", shutil.which("python3.9"))
                 if p and os.access(p, os.X_OK)), None)
OLD_PYTHON = next((str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.[678].*/bin/python3"))
                   if os.access(p, os.X_OK)), None)  # a real binary: a pyenv shim needs pyenv's environment


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    """A lab directory and an empty cache for the 'host' side."""
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab.toml").write_text(LAB_TOML)
    (tmp_path / "cache").mkdir()
    yield tmp_path


def start(host: Path, python: str = "python3", env: dict[str, str] | None = None,
          **popen: object) -> AgentClient:
    """The engine started by the bootstrap, as over SSH; its client, said hello to."""
    command = bundle.remote_command(str(host / "lab"), None, python=python)
    child_env = {"PATH": os.environ["PATH"], "HOME": str(host), "XDG_CACHE_HOME": str(host / "cache"), **(env or {})}
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env, cwd="/", start_new_session=True, **popen)
    return start_agent(PipeStream(proc), "testhost", keepalive=15)


def engine_dir(host: Path) -> Path:
    return host / "cache" / "mq" / f"engine-{bundle.engine_zip()[0]}"


# -- the bundle ---------------------------------------------------------------------------
def test_bundle_holds_the_engine_and_tomli_and_nothing_else() -> None:
    names = zipfile.ZipFile(io.BytesIO(bundle.engine_zip()[1])).namelist()
    engine = sorted(p.relative_to(bundle.ENGINE_DIR).as_posix() for p in Path(bundle.ENGINE_DIR).rglob("*.py"))
    tomli = Path(bundle.sources()[-1][1]).parent
    assert names == ["mq/__init__.py", *(f"mq/engine/{n}" for n in engine),
                     *(f"tomli/{p.name}" for p in sorted(tomli.glob("*.py"))), "tomli/LICENSE"]


def test_digest_is_kept_per_installed_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = tmp_path / "engine"
    shutil.copytree(bundle.ENGINE_DIR, engine, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bundle, "ENGINE_DIR", str(engine))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle.engine_zip.cache_clear()
    digest = bundle.engine_digest()
    assert digest == bundle.engine_zip()[0]
    assert (tmp_path / "cache" / "mq" / bundle.DIGEST_CACHE).exists()

    def no_zipping() -> tuple[str, bytes]:
        raise AssertionError("zipped again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(bundle, "engine_zip", no_zipping)
        assert bundle.engine_digest() == digest  # another command: from the cache
    with (engine / "names.py").open("a") as handle:
        handle.write("# changed\n")  # an upgrade: other files, another digest
    bundle.engine_zip.cache_clear()
    assert bundle.engine_digest() == bundle.engine_zip()[0] != digest
    (tmp_path / "cache" / "mq" / bundle.DIGEST_CACHE).write_text("{not json")
    assert bundle.engine_digest() == bundle.engine_zip()[0]
    monkeypatch.setenv("XDG_CACHE_HOME", "/dev/null/cache")  # no cache at all: computed each time
    assert bundle.engine_digest() == bundle.engine_zip()[0]
    bundle.engine_zip.cache_clear()


def test_bootstrap_is_a_module_that_any_python3_parses() -> None:
    """It is sent as ``python3 -c <its text>``; importing it runs nothing."""
    source = Path(bootstrap.__file__).read_text()
    assert bundle.remote_command("/locks", None).split(" ", 2)[2].startswith(shlex.quote(source))
    compile(source, "bootstrap.py", "exec", flags=0, dont_inherit=True)


# -- the bootstrap on the host --------------------------------------------------------------
def test_installs_once_then_reuses(host: Path) -> None:
    client = start(host)
    try:
        assert client.call("info", name="b1")[0]["board"] == "b1"
    finally:
        client.close()
    agent = engine_dir(host) / "mq" / "engine" / "host" / "agent.py"
    assert (engine_dir(host) / "tomli" / "__init__.py").exists()
    stamp = (engine_dir(host).stat().st_ino, agent.stat().st_mtime_ns)
    client = start(host)
    client.close()
    assert (engine_dir(host).stat().st_ino, agent.stat().st_mtime_ns) == stamp


@pytest.mark.skipif(PYTHON39 is None, reason="python3.9 not installed")
def test_python39_host_without_tomli_parses_the_lab_with_the_shipped_one(host: Path) -> None:
    assert PYTHON39 is not None
    if subprocess.run([PYTHON39, "-c", "import tomli"], capture_output=True, check=False).returncode == 0:
        pytest.skip("this python3.9 has tomli installed")
    client = start(host, python=PYTHON39)
    try:
        assert [s["name"] for s in client.call("inventory")["systems"]][:3] == ["b1", "b2", "b3"]
    finally:
        client.close()


def test_host_without_tomllib_uses_the_shipped_tomli(host: Path) -> None:
    """A Python whose standard library has no tomllib (3.9, 3.10), no site-packages either."""
    hide = host / "hide"
    hide.mkdir()
    (hide / "tomllib.py").write_text("raise ImportError('no tomllib before Python 3.11')\n")
    python = host / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    client = start(host, python=str(python), env={"PYTHONPATH": str(hide)})
    try:
        assert [s["name"] for s in client.call("inventory")["systems"]][:3] == ["b1", "b2", "b3"]
    finally:
        client.close()


@pytest.mark.skipif(OLD_PYTHON is None, reason="no python3 older than 3.9 installed")
def test_old_python_is_told(host: Path) -> None:
    assert OLD_PYTHON is not None
    with pytest.raises(HostError, match=r"too old: mq needs Python >= 3\.9"):
        start(host, python=OLD_PYTHON)


def test_missing_python_is_told(host: Path) -> None:
    with pytest.raises(HostError, match="python3 was not found on testhost"):
        start(host, python=str(host / "no-such-python3"))


def test_an_engine_that_does_not_load_exits_with_its_status_and_a_hint(host: Path) -> None:
    start(host).close()
    shadow = host / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("raise ImportError('a json module of its own')\n")
    with pytest.raises(HostError) as caught:
        start(host, env={"PYTHONPATH": str(shadow)})
    assert f"exit status {bootstrap.ENGINE_BROKEN}; ImportError" in caught.value.message
    assert caught.value.message.endswith("the engine does not load with that python3 (its modules, PYTHONPATH)")


def test_a_damaged_engine_is_replaced(host: Path) -> None:
    start(host).close()
    agent = engine_dir(host) / "mq" / "engine" / "host" / "agent.py"
    good = agent.read_bytes()
    agent.write_text("def broken(:\n")
    client = start(host)
    try:
        assert client.bootstrap_why.startswith("the cached engine is damaged: its files differ from engine ")
        assert client.call("info", name="b1")[0]["board"] == "b1"
    finally:
        client.close()
    assert agent.read_bytes() == good


def test_an_unwritable_cache_runs_a_private_copy(host: Path, test_users: tuple[str, ...]) -> None:
    os.chmod(host, 0o755)
    os.chmod(host / "cache", 0o755)  # root's: the test user cannot write there
    os.chmod(host / "lab", 0o777)
    conftest._make_reachable(str(host / "lab"))  # the test user reaches the lab through pytest's tmp
    def copies() -> set[Path]:
        return {p for p in Path("/tmp").glob("mq-engine-*") if p.owner() == test_users[0]}

    before = copies()
    client = start(host, **as_user(test_users[0]))
    try:
        assert client.bootstrap_why == "not installed; the cache is not used: no cache directory"
        assert client.call("info", name="b1")[0]["board"] == "b1"
        mine = copies() - before
        assert len(mine) == 1
    finally:
        client.close()  # the engine ends (or, if it is slow to, is killed)
    assert not (host / "cache" / "mq").exists()
    # removed by its own session as it ended, or by the next session (a killed one cannot remove it)
    start(host, **as_user(test_users[0])).close()
    wait_for(lambda: not mine & copies(), what="the first session's private copy removed")


# -- how the end of a stream is read ----------------------------------------------------------
class EndedStream:
    """A stream whose other end has exited with ``status`` after writing ``stderr``."""

    def __init__(self, status: int | None, stderr: str, lost: bool = False) -> None:
        self.status, self.stderr, self.gone = status, stderr, lost

    def send(self, data: bytes) -> None:
        pass

    def recv(self, timeout: float) -> bytes | None:
        return b""

    def close(self) -> None:
        pass

    def exit_status(self) -> int | None:
        return self.status

    def last_error(self) -> str:
        return self.stderr

    def lost(self) -> bool:
        return self.gone


@pytest.mark.parametrize(("status", "stderr", "kind", "message"), [
    (75, "mq agent: client silent for 3 s", HostGaveUp,
     "Unable to ssh to h\nconnection lost: the host gave up (client silent for 3 s)"),
    (75, "", HostGaveUp, "Unable to ssh to h\nconnection lost: the host gave up (it heard nothing from this client)"),
    (1, "mq agent: client silent for 3 s", HostError,
     "the mq engine on h ended unexpectedly: exit status 1; mq agent: client silent for 3 s"),
    (1, "ModuleNotFoundError: No module named 'x' (PermissionError)", HostError,
     "the mq engine on h ended unexpectedly: exit status 1; ModuleNotFoundError: No module named 'x' "
     "(PermissionError)"),
    (None, "", HostError, "the mq engine on h ended unexpectedly"),
])
def test_the_end_is_told_by_exit_status_not_text(status: int | None, stderr: str, kind: type[Exception],
                                                 message: str) -> None:
    with pytest.raises(kind) as caught:
        AgentClient(EndedStream(status, stderr), "h", keepalive=15).read_line(1.0)
    assert type(caught.value) is kind
    assert isinstance(caught.value, (HostError, HostGaveUp)) and caught.value.message == message
