"""Run on the lab host as ``python3 -c <this file> DIGEST BASE LAB``: install the engine, start it.

``mq.transport.bundle`` sends this file's text as the command. It reuses
``~/.cache/mq/engine-DIGEST/`` only when no one else could have changed it:
it and every directory up to ``$HOME`` belong to the user (or root) and are not
group- or world-writable, and its files hash to DIGEST (``tree_digest``: names
and contents, ``__pycache__`` left out). Else it asks for the bundle on the
same channel (``{"bootstrap":"send","why":...}``), reads its size on a line and
then the zip, checks its files against DIGEST, unpacks it privately and renames
it into place (``~/.cache/mq`` made 0700), removing engines of other versions
unused for ``PRUNE_AGE``; where the cache cannot be trusted it runs a private
copy unpacked for this session alone. Then it says ``{"bootstrap":"ready"}``
and runs the agent in this process.

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


def tree_digest(files: "list[tuple[str, bytes]]") -> str:
    """The digest of a set of ``(name, bytes)`` files: what ``mq.transport.bundle`` names the
    engine by, computed alike from the zip and from an unpacked copy."""
    import hashlib

    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()[:16]


def zip_files(data: bytes) -> "list[tuple[str, bytes]]":
    import io
    import zipfile

    archive = zipfile.ZipFile(io.BytesIO(data))
    return [(info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()]


def unpacked_files(root: str) -> "list[tuple[str, bytes]]":
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                files.append((os.path.relpath(path, root).replace(os.sep, "/"), handle.read()))
    return files


def private(path: str, uid: int) -> str:
    """'' if only ``uid`` (or root) can change ``path``, else why not."""
    import stat

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return path + " is a symlink"
    if st.st_uid not in (uid, 0):
        import pwd

        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = "uid " + str(st.st_uid)
        return path + " belongs to " + owner
    if st.st_mode & 0o022 and not (st.st_uid == 0 and st.st_mode & stat.S_ISVTX):
        return path + " is writable by others (mode " + oct(st.st_mode & 0o7777) + ")"
    return ""


def unsafe_chain(path: str) -> str:
    """'' if ``path`` and every directory above it, up to ``$HOME`` (or /), are the user's (or
    root's) alone, else why not."""
    uid = os.getuid()
    home = os.path.realpath(os.path.expanduser("~"))
    current = os.path.realpath(path)
    while True:
        why = private(current, uid)
        if why:
            return why
        if current == home or os.path.dirname(current) == current:
            return ""
        current = os.path.dirname(current)


def distrust(target: str) -> str:
    """'' if no one but the user (or root) can have changed the cached engine at ``target``,
    else why not."""
    uid = os.getuid()
    why = unsafe_chain(target)
    if why:
        return why
    for directory, dirs, names in os.walk(target):  # what lies inside: the files, the __pycache__s
        for name in dirs + names:
            why = private(os.path.join(directory, name), uid)
            if why:
                return why
    return ""


def receive(digest: str, why: str) -> bytes:
    """Ask for the bundle and read it: its size on a line, then the zip; checked against ``digest``."""
    import json

    say("send", ',"why":' + json.dumps(why))
    line = b""
    while not line.endswith(b"\n"):
        line += read_exact(1)
    data = read_exact(int(line))
    if tree_digest(zip_files(data)) != digest:
        say("bad-hash")
        sys.exit(BAD_HASH)
    return data


def make_private_dirs(path: str) -> None:
    """Create ``path`` and any missing parent 0700 (``~/.cache`` and ``~/.cache/mq`` included)."""
    parent = os.path.dirname(path)
    if parent != path and not os.path.isdir(parent):
        make_private_dirs(parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


def install(digest: str, target: str, data: bytes) -> None:
    """Unpack the bundle privately beside ``target``, then rename it into place (a concurrent
    install of the same engine may win: its copy is as good)."""
    import io
    import shutil
    import zipfile

    unpacked = target + ".tmp" + str(os.getpid())
    try:
        make_private_dirs(os.path.dirname(target))
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


PRIVATE_PREFIX = "mq-engine-"
IN_USE = ".in-use"  # flocked by the session a private copy is for


def unpack_private(data: bytes) -> str:
    """A copy for this session alone, in a new 0700 directory: removed when the session ends,
    or by the next session's ``prune_private`` if this one was killed."""
    import fcntl
    import io
    import tempfile
    import zipfile

    prune_private()
    root = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)
    fd = os.open(os.path.join(root, IN_USE), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held (the fd stays open) until this process ends
    zipfile.ZipFile(io.BytesIO(data)).extractall(root)
    return root


def prune_private() -> None:
    """Remove this user's private copies whose session is over (their flock is free)."""
    import fcntl
    import shutil
    import tempfile
    import time

    parent = tempfile.gettempdir()
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if not name.startswith(PRIVATE_PREFIX) or os.lstat(path).st_uid != os.getuid():
                continue
            try:
                fd = os.open(os.path.join(path, IN_USE), os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:  # never finished (or not one of ours): gone once it is old
                if time.time() - os.lstat(path).st_mtime > PRUNE_AGE:
                    shutil.rmtree(path, True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, True)
            finally:
                os.close(fd)


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
    mq_cache = os.path.join(cache, "mq")
    target = os.path.join(mq_cache, "engine-" + digest)
    fresh = ""  # a private copy for this session, when the cache cannot be trusted
    if os.path.isdir(target):
        why = distrust(target)
        if why:
            fresh = unpack_private(receive(digest, "the cached engine is not used: " + why))
        elif tree_digest(unpacked_files(target)) != digest:  # the user's alone, but damaged: replaced
            import shutil

            data = receive(digest, "the cached engine is damaged: its files differ from engine " + digest)
            shutil.rmtree(target, True)
            install(digest, target, data)
    else:
        with contextlib.suppress(OSError):
            make_private_dirs(mq_cache)
        why = unsafe_chain(mq_cache) if os.path.isdir(mq_cache) else "no cache directory"
        data = receive(digest, "not installed" + ("" if not why else "; the cache is not used: " + why))
        if why:
            fresh = unpack_private(data)
        else:
            install(digest, target, data)
    if not fresh:
        with contextlib.suppress(OSError):
            os.utime(target)  # in use: not pruned
    say("ready")
    sys.path.insert(0, fresh or target)
    try:
        try:
            from mq.engine.host.agent import main as agent_main
        except (SyntaxError, ImportError):
            import traceback

            traceback.print_exc()
            return ENGINE_BROKEN
        return agent_main([base, *([lab] if lab else [])])
    finally:
        if fresh:
            import shutil

            shutil.rmtree(fresh, True)


if __name__ == "__main__":
    sys.exit(main())
