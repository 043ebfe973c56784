"""Writing an imported mq.sh lab as a lab.toml, for ``mq import-mqsh``.

This module owns the output side: the ``HEADER`` that explains how ``boot`` and ``power_off``
call the lab's reboot scripts, the TOML spelling of keys and values, ``lab_toml`` (the whole text,
checked as ``mq check`` would check it), ``check_output`` (whether the file may be written, asked
before the lab is read) and ``write_lab`` (writing it all at once, mode 0644). It works only on a
finished ``LabImport``; reading the lab is ``mqsh_import``'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from typing import Optional

from mq.engine.core.errors import BadInputError, safe_text
from mq.engine.core.inventory import parse_inventory

from .mqsh_lab import LabImport, Value

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

HEADER = """\
# How boot and power_off call the lab's reboot scripts (TFTPBOOT/NAME/reboot):
# boot passes what mq.sh's runner passes on the lab host, in its order:
#   reboot [-L] [-b DTB] [--bitstream FILE] -t SECS -c TEXT -e TEXT -k IMAGE [-u IMAGE2] [-a -i]
# {timeout}, {completion} and {error} are mq run's -d, -c and -e (-1 and "" when not given),
# {keep_alive} is "-a -i" under -a. mq watches the console for -c, -e and -d itself as well, and
# stops the script when one is met (printing [[Timeout]] when -d runs out). There is no -l: mq
# writes the console to mq run's -l LOGFILE itself (the runner on the lab host passes -l only
# when given one). power_off is SystemPowerOff's `RebootShutdown NAME`, that is
# `reboot --shutdown`; mq runs it after every run and reservation, mq.sh after a reservation.
"""


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def lab_toml(lab: LabImport, version: str, path: str, when: Optional[float] = None) -> str:
    """The ``lab.toml`` text for ``lab`` (which must have no errors), checked as ``mq check`` would
    check it at ``path`` (its first problem raised: an InventoryError)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(time.time() if when is None else when))
    lines = [f"# Imported from the mq.sh lab in {lab.directory}",
             f"# by mq import-mqsh (mq {version}) on {stamp}.", "#",
             *HEADER.replace("TFTPBOOT", lab.tftpboot).splitlines()]
    for system in lab.systems:
        lines += ["", *(f"# {safe_text(note, 400)}" for note in system.notes), f"[systems.{_toml_key(system.name)}]"]
        lines += [f"{attr} = {_toml_value(value)}" for attr, value in system.values.items()]
    for pool in lab.pools:
        members = ", ".join(json.dumps(member) for member in pool.members)
        lines += ["", f"[pools.{_toml_key(pool.name)}]", f"systems = [{members}]"]
    text = "\n".join(lines) + "\n"
    parse_inventory(text, path)
    return text


def check_output(path: str, force: bool) -> None:
    """BadInputError, before anything is read, when ``path`` cannot be written as asked."""
    if os.path.isdir(path):
        raise BadInputError(f"{path}: is a folder (give a file name)")
    if os.path.lexists(path) and not force:
        raise BadInputError(f"{path}: exists (--force replaces it)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInputError(f"{folder}: no such folder")


def write_lab(path: str, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` all at once, mode 0644: a new file is linked into place (so an
    existing one is never replaced unless ``force``), a forced one renamed over the old."""
    check_output(path, force)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".lab-", suffix=".toml.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError:
        raise BadInputError(f"{path}: exists (--force replaces it)") from None
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


__all__ = ["HEADER", "check_output", "lab_toml", "write_lab"]
