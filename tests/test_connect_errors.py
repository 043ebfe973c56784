"""Reaching the lab host: why a connection failed, told from paramiko's exception types and
the state of its transport (never its message text); whether the ssh config (paramiko's
reader, the only one) says how to reach this machine's own name."""

from __future__ import annotations

import getpass
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mq.settings.config import Config
from mq.settings.errors import EXIT_SSH
from mq.transport import _is_this_host
from mq.transport.base import SshError
from mq.transport.paramiko_ssh import ParamikoTransport
from mq.transport.sshconfig import configured_for


def serve(tmp_path: Path, handle: Callable[[socket.socket], None]) -> Iterator[Path]:
    """A TCP server on 127.0.0.1 treating each connection with ``handle``; an ssh config for it."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                handle(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host labhost\n  HostName 127.0.0.1\n  Port {server.getsockname()[1]}\n  ConnectTimeout 1\n"
                      f"  UserKnownHostsFile {tmp_path / 'known_hosts'}\n  StrictHostKeyChecking no\n")
    yield config
    stop.set()
    thread.join()
    server.close()


def connect_error(config: Path) -> SshError:
    with pytest.raises(SshError) as caught:
        ParamikoTransport(Config(host="labhost", base="/locks", lab="/locks/lab.toml", ssh_config=str(config)))
    assert caught.value.exit_code == EXIT_SSH
    return caught.value


@pytest.fixture
def drops(tmp_path: Path) -> Iterator[Path]:
    """sshd over MaxStartups: it accepts the connection and closes it at once."""
    yield from serve(tmp_path, lambda conn: None)


@pytest.fixture
def mute(tmp_path: Path) -> Iterator[Path]:
    """A host that accepts the connection and never says anything."""
    yield from serve(tmp_path, lambda conn: time.sleep(2))


@pytest.fixture
def stalls(tmp_path: Path) -> Iterator[Path]:
    """A host that sends its greeting and then nothing (the key exchange never completes)."""

    def greet(conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        time.sleep(2)

    yield from serve(tmp_path, greet)


@pytest.fixture
def not_ssh(tmp_path: Path) -> Iterator[Path]:
    """Something else on the port, talkative (more lines than paramiko reads looking for a greeting)."""
    yield from serve(tmp_path, lambda conn: conn.sendall(b"HTTP/1.0 400 Bad Request\r\n" * 120))


def test_connection_dropped_before_the_greeting(drops: Path) -> None:
    error = connect_error(drops)
    assert error.reason.startswith("the host dropped the connection before its greeting, 4 tries (")
    assert error.reason.endswith("; sshd's MaxStartups?)")


@pytest.mark.parametrize("server", ["mute", "stalls"])
def test_greeting_never_completed(server: str, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    error = connect_error(request.getfixturevalue(server))
    assert error.reason == "the host accepted the connection but never completed the SSH greeting (timed out)"
    assert time.monotonic() - started < 5


def test_something_else_on_the_port_keeps_paramikos_words(not_ssh: Path) -> None:
    error = connect_error(not_ssh)
    assert "greeting" not in error.reason and "HTTP/1.0" in error.reason


# -- the ssh config: does it say how to reach this machine's own name? --------------------------
NAME = "thishost.example"


@pytest.mark.parametrize(("text", "configured"), [
    ("", False),
    ("Host other\n  User bob\n", False),
    ("Host *\n  User bob\n  IdentityFile ~/.ssh/id_%h\n  HostName %h.lab\n", False),  # every host alike
    ("Match all\n  Port 2222\n", False),
    (f"Host * !{NAME}\n  User bob\n", False),  # everyone but this one
    (f"Host {NAME}\n  Port 2222\n", True),
    (f"Host=other {NAME}\n  User=bob\n", True),
    ("Host thishost.*\n  ProxyJump gate\n", True),  # a pattern naming it
    (f"Match host {NAME}\n  User bob\n", True),  # Match: the old reader ignored it
    (f"Host {NAME}\n", False),  # named, but says nothing
    ("Host\n", True),  # unreadable: connecting says why
])
def test_configured_for(tmp_path: Path, text: str, configured: bool) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(text)
    assert configured_for(NAME, str(config)) is configured


def test_no_config_file_configures_nothing(tmp_path: Path) -> None:
    assert not configured_for(NAME, str(tmp_path / "missing"))


def test_own_name_skips_ssh_unless_the_config_names_it(tmp_path: Path) -> None:
    name = socket.gethostname()
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ServerAliveInterval 5\n")

    def this_host(host: str) -> bool:
        return _is_this_host(Config(host=host, base="/locks", lab="/locks/lab.toml", ssh_config=str(config)))

    assert this_host(name) and this_host(f"{getpass.getuser()}@{name}")
    assert not this_host(f"someone-else@{name}") and not this_host("not-this-host.invalid")
    config.write_text(f"Match host {name}\n  Port 2222\n")
    assert not this_host(name)
