"""The engine shipped to the lab host: a deterministic zip named by its hash.

The host needs only ``python3`` (>= 3.9): the command run there is
``python3 -c <bootstrap.py> DIGEST BASE LAB``, and the bootstrap asks for the
zip only when the host has no engine of that digest yet. The zip holds
``mq/engine`` and ``tomli``, the one package the engine needs beyond the
standard library (``tomllib`` came with Python 3.11).

The digest is computed once per installed version and kept in the client's
cache, keyed by the names, sizes and times of the files that go into the
zip and of the code that builds it: a command zips nothing unless the host
asks for the bundle.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE_DIR = os.path.join(os.path.dirname(HERE), "engine")
BOOTSTRAP = os.path.join(HERE, "bootstrap.py")
DIGEST_CACHE = "bundle-digest.json"  # in the client's ~/.cache/mq


def _tomli_dir() -> str:
    from importlib.util import find_spec

    spec = find_spec("tomli")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mq's dependency tomli is not installed")
    return next(iter(spec.submodule_search_locations))


def sources() -> list[tuple[str, str]]:
    """(name in the zip, file) of every file the bundle holds, in zip order."""
    tomli = _tomli_dir()
    engine = []
    for directory, dirs, names in os.walk(ENGINE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(directory, ENGINE_DIR).replace(os.sep, "/")
        prefix = "mq/engine/" if relative == "." else f"mq/engine/{relative}/"
        engine += [(prefix + name, os.path.join(directory, name)) for name in sorted(names) if name.endswith(".py")]
    return (sorted(engine)
            + [(f"tomli/{name}", os.path.join(tomli, name)) for name in sorted(os.listdir(tomli))
               if name.endswith(".py")])


@functools.lru_cache(maxsize=1)
def engine_zip() -> tuple[str, bytes]:
    """(digest, zip bytes): an empty ``mq/__init__.py``, ``mq/engine/**/*.py``, ``tomli/*.py``
    (and tomli's license), each dated 1980 so that the same files give the same digest."""
    import io
    import zipfile

    entries = [("mq/__init__.py", b"")]
    entries += [(name, _read(path)) for name, path in sources()]
    entries += _tomli_license()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return tree_digest(entries), buffer.getvalue()


def tree_digest(files: list[tuple[str, bytes]]) -> str:
    """The engine's name: its files' names and contents (``bootstrap.tree_digest``, which the host
    checks a received zip and a cached copy against)."""
    import hashlib

    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()[:16]


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _tomli_license() -> list[tuple[str, bytes]]:
    """tomli's license file, shipped with its code (MIT)."""
    from importlib import metadata

    try:
        files = metadata.distribution("tomli").files or []
    except metadata.PackageNotFoundError:
        return []
    return [(f"tomli/{path.name}", path.read_binary()) for path in files
            if path.name.startswith("LICENSE") and ".dist-info" in str(path.parent)][:1]


def _stamp() -> list[Any]:
    """What the digest depends on: every source's name, size and time, and this code's."""
    stamp: list[Any] = []
    for name, path in [*sources(), ("bundle", __file__)]:
        info = os.stat(path)
        stamp.append([name, info.st_size, info.st_mtime_ns])
    return stamp


def engine_digest() -> str:
    """The bundle's digest, from the client's cache while the files are unchanged."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                         "mq", DIGEST_CACHE)
    stamp = _stamp()
    try:
        with open(cache, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached["stamp"] == stamp:
            return str(cached["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = engine_zip()[0]
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        written = f"{cache}.{os.getpid()}"
        with open(written, "w", encoding="utf-8") as handle:
            json.dump({"stamp": stamp, "digest": digest}, handle)
        os.replace(written, cache)
    except OSError:
        pass  # no cache: computed again next time
    return digest


def remote_command(base: str, lab: str | None, python: str = "python3") -> str:
    """The single command the client runs on the host (every value shell-quoted)."""
    with open(BOOTSTRAP, encoding="utf-8") as handle:
        script = handle.read()
    return " ".join(shlex.quote(part) for part in (python, "-c", script, engine_digest(), base, lab or ""))


def bundle_message() -> bytes:
    _, data = engine_zip()
    return f"{len(data)}\n".encode() + data
