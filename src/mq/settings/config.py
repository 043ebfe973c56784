"""Where the lab is: options > environment > config file > built-in default.

* ``mq --host H --base DIR`` (global options)
* ``MQ_HOST``, ``MQ_BASE``, ``MQ_LAB``, ``MQ_SSH_CONFIG``, ``MQ_BACKEND`` (environment)
* ``$MQ_CONFIG`` or ``~/.config/mq/config.toml`` keys ``host``, ``base``,
  ``lab``, ``ssh_config``, ``transport``, ``backend``; without either, ``HOST=`` and
  ``BASE=`` lines of mq.sh's ``~/.mq`` (read, never executed)
* default: ``host = "local"`` with a demo lab under ``~/.local/share/mq``.

``backend = "postgresql://USER@HOST/DB"`` (a libpq connection URI, or
keywords such as ``service=mq``) puts the queue in PostgreSQL: the locks,
the queue and the inventory come from that database, and ``host`` is only
the lab host for systems that do not name their own.

Invoked as ``mq.sh`` (``mqsh=True``) the tool configures itself as mq.sh
does: ``~/.mq`` is always read and wins over the config file, and with
nothing set the lab is mq.sh's own host and lock directory, never the
demo lab.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from .errors import ConfigError

LOCAL = "local"
MQSH_HOST = "tftp.keg.cse.unsw.edu.au"  # mq.sh master's built-in lab host
MQSH_BASE = "/var/cache/machinelocks"
TRANSPORTS = ("paramiko", "openssh")
_KEYS = ("host", "base", "lab", "ssh_config", "transport", "backend")
_ENV = {"host": "MQ_HOST", "base": "MQ_BASE", "lab": "MQ_LAB", "ssh_config": "MQ_SSH_CONFIG", "backend": "MQ_BACKEND"}
_BACKEND = re.compile(r"(postgres|postgresql)://\S*|\s*\w+\s*=.*", re.DOTALL)


@dataclass(frozen=True, eq=True)
class Config:
    host: str
    base: str
    lab: str  # inventory file: <base>/lab.toml unless named
    ssh_config: Optional[str] = None
    transport: str = "paramiko"
    default_lab: bool = False  # nothing configured: the built-in demo lab
    backend: str = ""  # a PostgreSQL connection string: the queue lives there ("": the lock directory)
    sources: Dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL

    @property
    def host_user(self) -> Optional[str]:
        """The user of a ``user@host`` HOST (as mq.sh allowed), else None (ssh config decides)."""
        return self.host.rsplit("@", 1)[0] if "@" in self.host else None

    @property
    def lab_is_default(self) -> bool:
        return "lab" not in self.sources

    @property
    def host_name(self) -> str:
        return self.host.rsplit("@", 1)[-1]


def redacted(backend: str) -> str:
    """A backend connection string fit to print: its password, if it has one, masked."""
    if "://" in backend:
        shown = re.sub(r"(://[^:/@?]*):[^@/?]*@", r"\1:***@", backend)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", shown)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", backend)


def default_base(env: Mapping[str, str]) -> str:
    data = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "mq")


def config_path(env: Mapping[str, str]) -> str:
    if env.get("MQ_CONFIG"):
        return env["MQ_CONFIG"]
    cfg = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(cfg, "mq", "config.toml")


def _read_file(path: str, explicit: bool) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(path, "", "no such file (named by MQ_CONFIG)") from None
        return {}
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read ({exc.strerror})") from None
    from mq.engine.core.tomlparse import loads

    try:
        data: Dict[str, Any] = loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc})") from None
    for key, value in data.items():
        if key not in _KEYS:
            raise ConfigError(path, key, f"unknown key (known: {', '.join(_KEYS)})")
        if not isinstance(value, str) or not value:
            raise ConfigError(path, key, "expected a non-empty string")
    return data


_LEGACY = re.compile(r"""^\s*(?:export\s+)?(HOST|BASE)=(["']?)([^"'\s;#]+)\2\s*(?:#.*)?$""")


def read_legacy(path: str) -> Dict[str, str]:
    """``HOST=...`` and ``BASE=...`` from mq.sh's shell config ``~/.mq`` (nothing is executed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    found: Dict[str, str] = {}
    for line in lines:
        match = _LEGACY.match(line)
        if match:
            found[match.group(1).lower()] = match.group(3)
    return found


def load_config(host: Optional[str] = None, base: Optional[str] = None,
                env: Optional[Mapping[str, str]] = None, mqsh: bool = False) -> Config:
    env = os.environ if env is None else env
    for flag, given in (("--host", host), ("--base", base)):
        if given is not None and not given.strip():
            raise ConfigError(flag, "", "expected a non-empty value")
    path = config_path(env)
    from_file = _read_file(path, explicit=bool(env.get("MQ_CONFIG")))
    legacy_path = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".mq")
    layers = [(path, from_file)]
    if mqsh:  # mq.sh sources ~/.mq after its defaults: it wins over mq's own file
        layers.insert(0, (legacy_path, read_legacy(legacy_path)))
    elif not from_file and not env.get("MQ_CONFIG"):
        layers = [(legacy_path, read_legacy(legacy_path))]
    chosen: Dict[str, str] = {}
    sources: Dict[str, str] = {}
    for key in _KEYS:
        option = {"host": host, "base": base}.get(key)
        env_name = _ENV.get(key)
        if option:
            chosen[key], sources[key] = option, "option"
        elif env_name and env.get(env_name):
            chosen[key], sources[key] = env[env_name], env_name
        else:
            for layer_path, layer in layers:
                if key in layer:
                    chosen[key], sources[key] = layer[key], layer_path
                    break
    # Only what nobody named is made up: an explicit lab file (MQ_LAB, lab =) must exist.
    backend = chosen.get("backend", "")
    if backend and not _BACKEND.fullmatch(backend):
        raise ConfigError(sources["backend"], "backend", "expected postgresql://USER@HOST/DB (a libpq URI) "
                                                         "or libpq keywords such as service=mq")
    if backend:
        from .backend_string import check

        check(backend, sources["backend"])
    default_lab = not mqsh and not backend and not chosen.get("host") and not chosen.get("base") \
        and not chosen.get("lab")
    transport = chosen.get("transport", "paramiko")
    if transport not in TRANSPORTS:
        raise ConfigError(sources.get("transport", path), "transport", f"expected one of {', '.join(TRANSPORTS)}")
    the_host = chosen.get("host", MQSH_HOST if mqsh else LOCAL)
    the_base = chosen.get("base") or (default_base(env) if the_host == LOCAL and not mqsh else MQSH_BASE)
    the_base = os.path.expanduser(the_base) if the_host == LOCAL else the_base
    lab = chosen.get("lab")
    if not lab and the_host == LOCAL:  # the host engine's own default: this machine is the host
        from mq.engine.lockdir.labpaths import default_inventory

        lab = default_inventory(the_base)
    lab = lab or os.path.join(the_base, "lab.toml")
    return Config(host=the_host, base=the_base, lab=os.path.expanduser(lab) if the_host == LOCAL else lab,
                  ssh_config=chosen.get("ssh_config"), transport=transport, default_lab=default_lab,
                  backend=backend, sources=sources)
