"""A real OpenSSH sshd on 127.0.0.1 for the SSH transport tests.

Random port, generated host and user keys, ``LogLevel VERBOSE`` (so every
``Accepted publickey`` is logged), keys for each test user, and one
client ssh config per user that never touches the developer's own files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sshd:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    host_pub: str
    users: tuple[str, ...]
    extra: list[Sshd] = field(default_factory=list)

    def accepted(self) -> int:
        """How many publickey logins this sshd accepted so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_pub}"

    def key(self, user: str) -> Path:
        return self.root / "keys" / user

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sshd(root: Path, users: tuple[str, ...], keys_from: Sshd | None = None,
               options: tuple[str, ...] = ()) -> Sshd:
    """A real sshd on 127.0.0.1; ``options`` are sshd_config lines that win over the defaults."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = root / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    keys = root / "keys"
    auth = root / "authorized_keys"
    keys.mkdir(exist_ok=True)
    auth.mkdir(exist_ok=True)
    os.chmod(keys, 0o755)
    os.chmod(auth, 0o755)
    for user in users:
        key = keys / user
        if keys_from is not None:
            shutil.copy(keys_from.key(user), key)
            shutil.copy(str(keys_from.key(user)) + ".pub", str(key) + ".pub")
        elif not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (auth / user).write_text(Path(str(key) + ".pub").read_text())
        os.chmod(auth / user, 0o644)
    port = free_port()
    log = root / "sshd.log"
    config = root / "sshd_config"
    defaults = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root}/sshd.pid",
        f"AuthorizedKeysFile {auth}/%u", "StrictModes no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no", "LogLevel VERBOSE",
        "MaxStartups 200:30:400", "MaxSessions 100", "AllowTcpForwarding yes", "PermitRootLogin no",
        "ClientAliveInterval 0", "Subsystem sftp internal-sftp"]
    overridden = {line.split()[0].lower() for line in options}  # some keywords take the first value, some the last
    config.write_text("\n".join([*options, *(d for d in defaults if d.split()[0].lower() not in overridden), ""]))
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd failed to start: {log.read_text() if log.exists() else ''}") from None
            return False
        return True

    from conftest import wait_for  # here, not at the top: conftest imports this module

    wait_for(listening, timeout=10, what=f"sshd to listen on port {port}", step=0.05)
    host_pub = " ".join(Path(str(host_key) + ".pub").read_text().split()[:2])
    return Sshd(root=root, port=port, proc=proc, log=log, host_pub=host_pub, users=users)


def client_config(sshd: Sshd, user: str, path: Path, *, known_hosts: Path, alias: str = "labhost",
                  extra: str = "", alive: int = 1, alive_count: int = 3) -> Path:
    """An ssh client config for ``user`` reaching ``sshd`` as ``alias``."""
    key = sshd.key(user)
    local_key = path.parent / f"id_{user}"
    if not local_key.exists():
        shutil.copy(key, local_key)
        os.chmod(local_key, 0o600)
    path.write_text(f"""Host {alias}
  HostName 127.0.0.1
  Port {sshd.port}
  User {user}
  IdentityFile {local_key}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  ServerAliveInterval {alive}
  ServerAliveCountMax {alive_count}
{extra}""")
    return path


def user_home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)
