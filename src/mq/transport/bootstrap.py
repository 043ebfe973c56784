"""Run on the lab host as ``python3 -c <this file> DIGEST BASE LAB``: install the engine, start it.

``mq.transport.bundle`` sends this file's text as the command. It reuses
``~/.cache/mq/engine-DIGEST/`` when present; else it asks for the bundle on
the same channel (``{"bootstrap":"send"}``), reads its size on a line and
then the zip, checks the hash, unpacks it privately and renames it into
place, removing engines of other versions unused for ``PRUNE_AGE``. Then it
says ``{"bootstrap":"ready"}`` and runs the agent in this process.

Any ``python3`` must be able to parse it, so that an old one is told so
(``old-python``): no f-strings, no annotations beyond plain names. Its exit
statuses below tell the client what went wrong (``mq.transport.base``).
"""

import contextlib
import os
import sys

MIN_PYTHON = (3, 9)
PRUNE_AGE = 30 * 86400  # seconds an engine of another version may stay unused

OLD_PYTHON = 10
NO_BUNDLE = 11  # the input ended before the whole bundle came
BAD_HASH = 12
ENGINE_BROKEN = 13  # the cached engine does not import: damaged
CACHE_DENIED = 14  # no writable cache directory for it


def say(word: str, extra: str = "") -> None:
    os.write(1, ('{"bootstrap":"' + word + '"' + extra + "}\n").encode())


def read_exact(size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            sys.exit(NO_BUNDLE)
        data += chunk
    return data


def receive(digest: str) -> bytes:
    """Ask for the bundle and read it: its size on a line, then the zip; checked against ``digest``."""
    import hashlib

    say("send")
    line = b""
    while not line.endswith(b"\n"):
        line += read_exact(1)
    data = read_exact(int(line))
    if hashlib.sha256(data).hexdigest()[:16] != digest:
        say("bad-hash")
        sys.exit(BAD_HASH)
    return data


def install(digest: str, target: str) -> None:
    """Unpack the bundle privately beside ``target``, then rename it into place (a concurrent
    install of the same engine may win: its copy is as good)."""
    import io
    import shutil
    import zipfile

    data = receive(digest)
    unpacked = target + ".tmp" + str(os.getpid())
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        zipfile.ZipFile(io.BytesIO(data)).extractall(unpacked)
    except PermissionError:
        import traceback

        traceback.print_exc()
        sys.exit(CACHE_DENIED)
    try:
        os.rename(unpacked, target)
    except OSError:
        shutil.rmtree(unpacked, True)
    prune(target)


def prune(kept: str) -> None:
    """Remove engines of other versions unused (not started) for ``PRUNE_AGE``."""
    import shutil
    import time

    parent = os.path.dirname(kept)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if name.startswith("engine-") and path != kept and time.time() - os.stat(path).st_mtime > PRUNE_AGE:
                shutil.rmtree(path, True)


def main() -> int:
    digest, base, lab = sys.argv[1], sys.argv[2], sys.argv[3]
    if sys.version_info < MIN_PYTHON:
        say("old-python", ',"version":"' + ".".join(map(str, sys.version_info[:2])) + '"')
        return OLD_PYTHON
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    target = os.path.join(cache, "mq", "engine-" + digest)
    if not os.path.isfile(os.path.join(target, "mq", "engine", "agent.py")):
        install(digest, target)
    with contextlib.suppress(OSError):
        os.utime(target)  # in use: not pruned
    say("ready")
    sys.path.insert(0, target)
    try:
        from mq.engine.agent import main as agent_main
    except (SyntaxError, ImportError):
        import traceback

        traceback.print_exc()
        return ENGINE_BROKEN
    return agent_main([base, *([lab] if lab else [])])


if __name__ == "__main__":
    sys.exit(main())
