"""SSH with paramiko: one connection per command, the user's ssh config honoured."""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import time
from dataclasses import replace
from typing import Any

from mq.engine.core.signals import GUARD
from mq.settings.config import Config

from .base import SshError
from .bundle import remote_command
from .remote import RemoteTransport, start_agent
from .sshconfig import HostSettings, config_file, import_paramiko, resolve, split_jump

SEND_PATIENCE = 0.25  # seconds a blocked send waits before looking for a pending signal
CHUNK = 1 << 16
GREETING_TRIES = 4  # connections sshd drops before its greeting (MaxStartups) are tried again...
GREETING_BACKOFF = 0.25  # ... after about 0.25, 0.5, 1 s (each from half to one and a half times that)


class ChannelStream:
    """An exec channel as a byte stream."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._stderr = b""  # the tail of the host side's stderr (for last_error)

    def send(self, data: bytes) -> None:
        """Send it all; a signal that comes while the host accepts nothing (a full
        window) is raised here, mid-message: the caller must then cut the connection."""
        view = memoryview(data)
        self.channel.settimeout(SEND_PATIENCE)
        while view:
            try:
                sent = self.channel.send(bytes(view[:CHUNK]))
            except TimeoutError:
                if GUARD.pending is not None:
                    GUARD.check()
                continue
            view = view[sent:]

    def recv(self, timeout: float) -> bytes | None:
        """Wait up to ``timeout`` for data (None: none came); b"" at EOF.

        A signal wakes this at once (``GUARD.check()`` raises it). The channel's
        file descriptor is also readable for stderr output, which is set aside,
        not taken for data.
        """
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.channel.fileno(), *GUARD.wake_fds], [], [],
                                        max(0.0, deadline - time.monotonic()))
            GUARD.check()
            if not ready:
                return None
            self._drain_stderr()
            self.channel.settimeout(0.0)
            try:
                return bytes(self.channel.recv(65536))
            except (TimeoutError, BlockingIOError):  # socket.timeout is TimeoutError (Python >= 3.10)
                pass
            if time.monotonic() >= deadline:
                return None

    def _drain_stderr(self) -> None:
        while self.channel.recv_stderr_ready():
            self._stderr = (self._stderr + self.channel.recv_stderr(65536))[-4096:]

    def lost(self) -> bool:
        """The SSH connection is down (a dropped network, a killed sshd), as opposed to
        the engine ending at the other end of a live connection."""
        transport = self.channel.get_transport()
        deadline = time.monotonic() + 0.5  # the transport's reader notices a dropped socket a moment later
        while transport is not None and transport.is_active() and time.monotonic() < deadline:
            if self.channel.exit_status_ready() and self.channel.exit_status >= 0:
                return False
            time.sleep(0.02)
        return transport is None or not transport.is_active()

    def exit_status(self) -> int | None:
        deadline = time.monotonic() + 1.0
        while not self.channel.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._drain_stderr()
        return int(self.channel.exit_status) if self.channel.exit_status_ready() else None

    def last_error(self) -> str:
        self._drain_stderr()
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        self.channel.close()


class _RefusePolicy:
    """Unknown host keys are refused with advice, never silently added."""

    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        import paramiko

        s = self.settings
        raise paramiko.SSHException(
            f"the host key of {hostname} ({key.get_name()}) is not known. Check it and accept it with "
            f"`{s.ssh_command()} true` (or `ssh-keyscan -p {s.port} {s.hostname} >> {s.known_hosts[0]}`), "
            "or set `StrictHostKeyChecking accept-new` for this host")


class _QuietAcceptPolicy:
    """``StrictHostKeyChecking no``: accept without saving (paramiko's WarningPolicy would
    print a Python warning with its file path)."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        return None


def _client(settings: HostSettings) -> Any:
    import paramiko

    client = paramiko.SSHClient()
    for path in ("/etc/ssh/ssh_known_hosts", *settings.known_hosts[1:]):
        if os.path.exists(path):
            client.load_system_host_keys(path)
    primary = settings.known_hosts[0]
    if os.path.exists(primary):
        client.load_host_keys(primary)
    policy: Any
    if settings.strict_host_keys == "no":
        policy = _QuietAcceptPolicy()
    elif settings.strict_host_keys == "accept-new":
        os.makedirs(os.path.dirname(primary), mode=0o700, exist_ok=True)
        if not os.path.exists(primary):
            with open(primary, "a", encoding="utf-8"):
                pass
        client.load_host_keys(primary)  # also where AutoAddPolicy saves the new key
        policy = paramiko.AutoAddPolicy()
    else:
        policy = _RefusePolicy(settings)
    client.set_missing_host_key_policy(policy)
    return client


MAX_JUMPS = 8  # nested ProxyJump hops followed before a loop is assumed


def _socket(settings: HostSettings, config_path: str, chain: list[Any], depth: int = 0) -> Any:
    """The transport socket: direct TCP, a ProxyCommand, or a channel through ProxyJump hosts.

    As with OpenSSH, the first hop is reached with its own settings, its own
    ProxyJump or ProxyCommand included; later hops of a list go through the one before.
    """
    import paramiko

    if settings.proxy_jump:
        if depth >= MAX_JUMPS:
            raise paramiko.SSHException(f"ProxyJump nested more than {MAX_JUMPS} deep (a loop in the ssh config?)")
        previous: Any = None
        for hop in settings.proxy_jump:
            user, host, port = split_jump(hop)
            hop_settings = resolve(host, config_path, user)
            if port is not None:
                hop_settings = replace(hop_settings, port=port)
            if previous is None:
                sock = _socket(hop_settings, config_path, chain, depth + 1)
            else:
                sock = previous.get_transport().open_channel(
                    "direct-tcpip", (hop_settings.hostname, hop_settings.port), ("127.0.0.1", 0))
            previous = _connect(hop_settings, sock, chain)
        return previous.get_transport().open_channel("direct-tcpip", (settings.hostname, settings.port),
                                                     ("127.0.0.1", 0))
    if settings.proxy_command:
        return paramiko.ProxyCommand(settings.proxy_command)
    sock = socket.create_connection((settings.hostname, settings.port), timeout=settings.connect_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _agent_keys_for(identity_files: tuple[str, ...]) -> list[Any]:
    """ssh-agent keys matching the IdentityFiles' public halves (``X.pub``, or X itself when
    it is the ``.pub``): what OpenSSH offers from the agent under ``IdentitiesOnly yes``,
    so a passphrase-protected key loaded in the agent works as it does with ``ssh``."""
    import paramiko
    from paramiko.pkey import PublicBlob

    blobs = set()
    for path in identity_files:
        pub = path if path.endswith(".pub") else path + ".pub"
        if os.path.exists(pub):
            with contextlib.suppress(Exception):
                blobs.add(PublicBlob.from_file(pub).key_blob)
    if not blobs or not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return [key for key in paramiko.Agent().get_keys() if key.asbytes() in blobs]
    except Exception:  # no agent reachable: the files alone are tried
        return []


def _connect(settings: HostSettings, sock: Any, chain: list[Any]) -> Any:
    client = _client(settings)
    chain.append(client)
    files = [p for p in settings.identity_files if os.path.exists(p) and not p.endswith(".pub")]
    agent_keys = _agent_keys_for(settings.identity_files) if settings.identities_only else []
    client.connect(settings.hostname, port=settings.port, username=settings.user, sock=sock,
                   pkey=agent_keys[0] if agent_keys else None, key_filename=files or None,
                   look_for_keys=not settings.identities_only, allow_agent=not settings.identities_only,
                   timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
                   auth_timeout=settings.connect_timeout)
    transport = client.get_transport()
    transport.set_keepalive(max(1, int(settings.alive_interval)))
    # paramiko's reader thread wakes every 0.1 s (its socket timeout) to look for a close or
    # a keepalive due: 300 idle waiters pay a quarter of a core for it. Data, an EOF or a
    # reset wake it at once whatever the timeout; only its own keepalive needs the tick.
    transport.sock.settimeout(max(1.0, float(settings.alive_interval)))
    return client


class ParamikoTransport(RemoteTransport):
    def __init__(self, config: Config) -> None:
        path = config_file(config)
        paramiko = import_paramiko(path)
        self.host = config.host
        self._chain: list[Any] = []
        command = remote_command(config.base, None if config.lab_is_default else config.lab)
        for attempt in range(1, GREETING_TRIES + 1):
            try:
                settings = resolve(config.host_name, path, config.host_user)
                client = _connect(settings, _socket(settings, path, self._chain), self._chain)
                channel = client.get_transport().open_session()
                channel.exec_command(command)
                break
            except (OSError, paramiko.SSHException, EOFError, ValueError) as exc:
                transport = self._chain[-1].get_transport() if self._chain else None
                reason = _reason(exc, transport, attempt)
                self._close_chain()
                if attempt == GREETING_TRIES or not _dropped_before_greeting(exc, transport):
                    raise SshError(self.host, reason) from None
            _pause(GREETING_BACKOFF * 2 ** (attempt - 1))
        try:
            self.client = start_agent(ChannelStream(channel), self.host, settings.alive_interval,
                                      settings.alive_count)
        except BaseException:
            self._close_chain()
            raise

    def _close_chain(self) -> None:
        for client in reversed(self._chain):
            client.close()
        self._chain.clear()

    def close(self) -> None:
        super().close()
        self._close_chain()


def _pause(seconds: float) -> None:
    """Sleep about ``seconds`` (jittered, so clients dropped together do not come back together);
    a signal ends it at once."""
    select.select(GUARD.wake_fds, [], [], seconds * random.uniform(0.5, 1.5))
    GUARD.check()


def _dropped_before_greeting(exc: BaseException, transport: Any) -> bool:
    """The host accepted the TCP connection and closed it before any SSH greeting: sshd
    over its MaxStartups (or restarting). Nothing was started there: safe to try again."""
    import paramiko

    if transport is None:  # reset while the TCP connection was being made (refused: no sshd at all)
        return isinstance(exc, ConnectionResetError)
    if transport.initial_kex_done or transport.is_active() or transport.remote_version:
        return False
    cause = exc.__context__ if isinstance(exc, paramiko.SSHException) else exc  # closed: EOF; reset: errno 104
    return isinstance(cause, (EOFError, ConnectionError))


_BANNER = "Error reading SSH protocol banner"


def _reason(exc: BaseException, transport: Any, tries: int = 1) -> str:
    """Why connecting failed, from the exception's type and the state of the SSH transport
    (``transport``: the last connection tried, None before any; ``tries``: connections made)."""
    import paramiko

    text = str(exc) or exc.__class__.__name__
    if text.startswith(_BANNER) and text[len(_BANNER):len(_BANNER) + 1] not in ("", ":"):
        text = f"{_BANNER}: {text[len(_BANNER):]}"  # paramiko glues the cause on: "banner[Errno 104] ..."
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed ({text})"
    if isinstance(exc, paramiko.ChannelException):
        return f"the host refused to open a session ({exc.text}; sshd's MaxSessions?)"
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"the host key has CHANGED ({text}). Someone may be intercepting the connection, or the "
                "host was reinstalled: check with the lab's admins, then remove the old key with "
                "`ssh-keygen -R HOST` (and `-f` your UserKnownHostsFile) and accept the new one")
    if _dropped_before_greeting(exc, transport):
        times = f", {tries} tries" if tries > 1 else ""
        return f"the host dropped the connection before its greeting{times} ({text}; sshd's MaxStartups?)"
    waiting = transport is not None and (transport.is_active() or isinstance(exc.__context__, TimeoutError))
    if isinstance(exc, paramiko.SSHException) and waiting and not transport.initial_kex_done:
        return "the host accepted the connection but never completed the SSH greeting (timed out)"
    return text
