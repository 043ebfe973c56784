"""What the SSH benchmarks need on this machine (they reuse the test suite's sshd fixture)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def mq_source_path() -> str:
    """"" when mq is importable (installed); else the checkout's src, put on sys.path here
    and to be passed to children as PYTHONPATH."""
    try:
        import mq  # noqa: F401
    except ImportError:
        src = str(TESTS.parent / "src")
        sys.path.insert(0, src)
        return src
    return ""


def ssh_bench_ready() -> bool:
    """True when sshd and the test users are there; otherwise says why on stderr."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import conftest

    if not Path("/usr/sbin/sshd").exists():
        print("needs openssh-server (/usr/sbin/sshd)", file=sys.stderr)
        return False
    if not conftest._ensure_users():
        print("needs root (creates the test users mqalice/mqbob/mqcarol, as the SSH tests do)", file=sys.stderr)
        return False
    return True
