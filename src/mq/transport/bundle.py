"""The engine shipped to the lab host: a deterministic zip named by its hash.

The host needs only ``python3`` (>= 3.9). The bootstrap below runs there with
``python3 -c``: it reuses ``~/.cache/mq/engine-<hash>/`` when present, else
asks for the zip on the same channel, checks its hash, unpacks it privately
and renames it into place; then it starts the agent.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shlex
import zipfile
from pathlib import Path

ENGINE_DIR = Path(__file__).resolve().parent.parent / "engine"

# Engines of other versions unused this long are removed when a new one is installed
# (each command touches the engine it runs, so one in use stays).
PRUNE_AGE = 30 * 86400

BOOTSTRAP = r"""
import os,sys
h,base,lab=sys.argv[1],sys.argv[2],sys.argv[3]
w=lambda s:(os.write(1,(s+'\n').encode()))
if sys.version_info<(3,9):
    w('{"bootstrap":"old-python","version":"%d.%d"}'%sys.version_info[:2]);sys.exit(10)
c=os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'),'.cache')
d=os.path.join(c,'mq','engine-'+h)
if not os.path.isfile(os.path.join(d,'mq','engine','agent.py')):
    import hashlib,io,zipfile,shutil
    w('{"bootstrap":"send"}')
    def rd(n):
        b=b''
        while len(b)<n:
            x=os.read(0,n-len(b))
            if not x:sys.exit(11)
            b+=x
        return b
    l=b''
    while not l.endswith(b'\n'):l+=rd(1)
    z=rd(int(l))
    if hashlib.sha256(z).hexdigest()[:16]!=h:
        w('{"bootstrap":"bad-hash"}');sys.exit(12)
    os.makedirs(os.path.dirname(d),mode=0o700,exist_ok=True)
    t=d+'.tmp%d'%os.getpid()
    zipfile.ZipFile(io.BytesIO(z)).extractall(t)
    try:os.rename(t,d)
    except OSError:shutil.rmtree(t,True)
    import time
    p=os.path.dirname(d)
    for e in os.listdir(p):
        q=os.path.join(p,e)
        try:
            if e.startswith('engine-') and q!=d and time.time()-os.stat(q).st_mtime>AGE:shutil.rmtree(q,True)
        except OSError:pass
try:os.utime(d)
except OSError:pass
w('{"bootstrap":"ready"}')
sys.path.insert(0,d)
from mq.engine.agent import main
sys.exit(main([base]+([lab] if lab else [])))
"""


@functools.lru_cache(maxsize=1)
def engine_zip() -> tuple[str, bytes]:
    """(hash, zip bytes) of ``mq/__init__.py`` (empty) and ``mq/engine/*.py``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [("mq/__init__.py", b"")]
        entries += [(f"mq/engine/{p.name}", p.read_bytes()) for p in sorted(ENGINE_DIR.glob("*.py"))]
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest()[:16], data


def remote_command(base: str, lab: str | None, python: str = "python3") -> str:
    """The single command the client runs on the host (every value shell-quoted)."""
    digest, _ = engine_zip()
    script = BOOTSTRAP.replace("AGE", str(PRUNE_AGE))
    return " ".join(shlex.quote(part) for part in (python, "-c", script, digest, base, lab or ""))


def bundle_message() -> bytes:
    _, data = engine_zip()
    return f"{len(data)}\n".encode() + data


def engine_files() -> list[str]:
    return sorted(os.path.basename(p) for p in map(str, ENGINE_DIR.glob("*.py")))
