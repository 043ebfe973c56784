"""An mq.sh lab's systems and pools, read as mq.sh reads them, for ``mq import-mqsh``.

An mq.sh lab describes each board as shell functions in a file of its own under
``scripts/systems/`` (``SystemNumFiles_NAME``, ``Arch_NAME``, ``Cores_NAME`` ...,
each echoing a value) and each pool in a file under ``scripts/pools/``
(``Systems_POOL``, which may compute its members from the systems' attributes).
Nothing is parsed here: the files are sourced into one shell as mq.sh sources
them (``SCRIPT_PATH`` set to the lab, the systems then the pools, with the
``SystemList`` and ``PoolList`` a pool function may call) and every function is
called as ``$(...)`` calls it, its text kept exactly as mq.sh shows it
(``4(1)``, ``?``, empty). The files are those mq.sh lists: not its
``unavailable/`` folders, other folders, hidden files or ``~`` backups. One
shell does all the calls, in a clean environment and under a time limit.

A missing or failing ``SystemNumFiles_NAME`` or ``Systems_POOL``, a file that
cannot be sourced, or a value lab.toml cannot hold is an error: ``import_lab``
reports every one and ``lab_toml`` is not to be written. Any other function that
is missing or fails is a warning: the system gets what mq.sh shows (nothing,
or what it printed), without ``boot`` if ``SystemName_NAME`` gave no name, and
without ``power_off`` unless ``SystemPowerOff_NAME`` calls ``RebootShutdown``
(found out by calling it with ``RebootShutdown`` standing in, and no program
on its PATH).

``boot`` and ``power_off`` call the lab's own ``TFTPBOOT/NAME/reboot`` with the
arguments mq.sh's runner gives it on the lab host (``boot_words``). Nothing
here prints: the CLI shows the findings and writes the file.

The work is split in four modules: ``mqsh_lab`` holds the shared types (``Finding``,
``LabImport`` ...) and attribute tables, ``mqsh_shell`` runs the lab's code in the shell and
returns each step's ``Output``, this module finds the files, checks the lab's answers and builds
the ``LabImport`` (``import_lab``), and ``mqsh_toml`` turns it into the lab.toml text and writes
it (``lab_toml``, ``check_output``, ``write_lab``).
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from mq.engine.core.errors import BadInputError
from mq.engine.core.names import valid_name

from .mqsh_lab import FLAG_FIELDS, TEXT_FIELDS, Finding, ImportedPool, ImportedSystem, LabFile, LabImport, Value, _shown
from .mqsh_shell import Output, _said, ask_shell

TIME_LIMIT = 30.0  # seconds for the whole shell (a lab of 50 systems takes well under one)
SKIPPED_FOLDER = "unavailable"  # retired boards and pools, which mq.sh does not read
_COUNT = re.compile(r"[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- finding the files ------------------------------------------------------------------------------
def lab_files(directory: str, kind: str) -> Tuple[List[LabFile], List[Finding]]:
    """The files of ``scripts/KIND`` (systems, pools) that mq.sh reads, in its order (C locale), and a
    warning for each other folder there."""
    folder = os.path.join(directory, "scripts", kind)
    files: List[LabFile] = []
    found: List[Finding] = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        where = f"scripts/{kind}/{name}"
        if name.startswith(".") or name.endswith("~"):
            continue  # not in `echo *`, or a backup mq.sh leaves out
        if os.path.isdir(path):
            if name != SKIPPED_FOLDER:
                found.append(Finding(where, "", "a folder: not read (mq.sh reads no folder but unavailable/, "
                                                "which it skips)", error=False))
        elif os.path.isfile(path):
            files.append(LabFile(name, where, path))
        else:
            found.append(Finding(where, "", "not a regular file (a broken link?): mq.sh cannot source it"))
    return files, found


def check_directory(directory: str) -> str:
    """The lab's absolute path; BadInputError when it has no ``scripts/systems`` folder."""
    if not os.path.isdir(directory):
        raise BadInputError(f"{directory}: no such folder (give the mq.sh checkout, with scripts/systems/)")
    if not os.path.isdir(os.path.join(directory, "scripts", "systems")):
        raise BadInputError(f"{directory}: no scripts/systems/ folder: not an mq.sh lab")
    return os.path.abspath(directory)


def check_tftpboot(tftpboot: str) -> str:
    """The reboot scripts' folder as the templates name it; BadInputError when they could not."""
    if not os.path.isabs(tftpboot) or "{" in tftpboot or "}" in tftpboot or _CONTROL.search(tftpboot):
        raise BadInputError(f"--tftpboot {_shown(tftpboot)}: give an absolute path without braces")
    return os.path.normpath(tftpboot)


# -- what the values mean ---------------------------------------------------------------------------
def _value(where: str, function: str, output: Output, found: List[Finding]) -> str:
    """An attribute as mq.sh shows it; a warning when its function is missing or failed."""
    failure = output.failure()
    if failure:
        kept = "kept what it printed" if output.text else "left empty"
        found.append(Finding(where, function, f"{failure}: {kept}, as mq.sh shows it", error=False))
    if _CONTROL.search(output.text) or "\ufffd" in output.text:
        found.append(Finding(where, function, f"printed {_shown(output.text)}: lab.toml cannot hold it "
                                              "(a control character, or not UTF-8)"))
    return output.text


def _flag(where: str, function: str, output: Output, found: List[Finding]) -> bool:
    """PXELinux, DTB: true for "yes" exactly, as mq.sh's test takes it."""
    value = output.text == "yes"
    failure = output.failure()
    if failure or output.text not in ("yes", "no"):
        why = failure or f"printed {_shown(output.text)}"
        found.append(Finding(where, function, f'{why}: {"true" if value else "false"} (mq.sh takes only "yes" '
                                              "for yes)", error=False))
    return value


def _files(where: str, name: str, outputs: Dict[Tuple[str, str], Output], found: List[Finding]) -> Optional[int]:
    """SystemNumFiles (required); a warning when ``-L`` changes it, which mq cannot express."""
    function = f"SystemNumFiles_{name}"
    output = outputs[(where, "files")]
    failure = output.failure()
    if failure or not _COUNT.fullmatch(output.text):
        found.append(Finding(where, function, failure or f"printed {_shown(output.text)}, not a number of images"))
        return None
    files = int(output.text)
    linux = outputs[(where, "files -L")]
    if not linux.failure() and _COUNT.fullmatch(linux.text) and int(linux.text) != files:
        found.append(Finding(where, f"{function} -L", f"prints {linux.text}: mq has one image count (files = "
                                                       f"{files}), so mq run -L on {name} takes {files}",
                             error=False))
    return files


def _folder(where: str, function: str, failure: str, text: str, found: List[Finding], without: str) -> Optional[str]:
    """The folder of a reboot script, ``text``; None, with a warning saying ``without``, when it is not one."""
    if not failure and not valid_name(text):
        failure = f"gave {_shown(text)}, not a folder name"
    if failure:
        found.append(Finding(where, function, f"{failure}: {without}", error=False))
        return None
    return text


def _power_off_failure(output: Output) -> str:
    """Why the probe of SystemPowerOff_NAME found no ``RebootShutdown NAME`` ('' when it did)."""
    if output.failure() or output.text.startswith("R"):
        return output.failure()
    if output.text.startswith("E"):
        return f"does not call RebootShutdown (it returned {output.text[1:]})"
    return "ended the shell without calling RebootShutdown"


def boot_words(reboot: str, files: int, pxe_linux: bool, dtb: bool) -> List[str]:
    """mq.sh's runner's command line on the lab host, as template words: ``reboot [-L] [-b DTB]
    [--bitstream FILE] -t SECS -c TEXT -e TEXT -k IMAGE [-u IMAGE2] [-a -i]`` (two images exactly when
    ``files`` is 2; ``-L`` and ``-b`` only where mq.sh accepts them)."""
    words = [shlex.quote(reboot), *(["{linux}"] if pxe_linux else []), *(["{dtb_flag}"] if dtb else [])]
    words += ["{bitstream_flag}", "-t", "{timeout}", "-c", "{completion}", "-e", "{error}", "-k", "{file1}"]
    return [*words, *(["-u", "{file2}"] if files == 2 else []), "{keep_alive}"]


def import_system(system: LabFile, outputs: Dict[Tuple[str, str], Output], tftpboot: str,
                  found: List[Finding]) -> Optional[ImportedSystem]:
    """One system's values and commands, its warnings as notes (None when it cannot be imported)."""
    where, name = system.where, system.name
    if not valid_name(name):
        found.append(Finding(where, "", f"{_shown(name)} is not a valid mq name (1-64 of A-Z a-z 0-9 _ . + -)"))
        return None
    before = len(found)
    files = _files(where, name, outputs, found)
    values: Dict[str, Value] = {attr: _value(where, f"{prefix}_{name}", outputs[(where, attr)], found)
                                for prefix, attr in TEXT_FIELDS}
    if files is not None:
        values["files"] = files
    values.update({attr: _flag(where, f"{prefix}_{name}", outputs[(where, attr)], found)
                   for prefix, attr in FLAG_FIELDS})
    named, probe = outputs[(where, "name")], outputs[(where, "power_off")]
    folder = _folder(where, f"SystemName_{name}", named.failure(), named.text, found,
                     f"no boot command (mq run cannot boot {name}; sem and run -r work)")
    shutdown = _folder(where, f"SystemPowerOff_{name}", _power_off_failure(probe), probe.text[1:], found,
                       "no power_off (write one by hand)")
    if files is None:
        return None
    if folder is not None:
        values["boot"] = " ".join(boot_words(os.path.join(tftpboot, folder, "reboot"), files,
                                             bool(values["pxe_linux"]), bool(values["dtb"])))
    if shutdown is not None:
        values["power_off"] = f"{shlex.quote(os.path.join(tftpboot, shutdown, 'reboot'))} --shutdown"
    return ImportedSystem(name, values, [f"{f.function}: {f.message}" for f in found[before:]])


def import_pool(pool: LabFile, output: Output, systems: Sequence[str], directory: str,
                found: List[Finding]) -> Optional[ImportedPool]:
    """One pool and its members (the systems its function prints, in its order)."""
    where, function = pool.where, f"Systems_{pool.name}"
    if not valid_name(pool.name) or pool.name in systems:
        why = "has the name of a system" if pool.name in systems else "is not a valid mq name"
        found.append(Finding(where, "", f"{_shown(pool.name)} {why}"))
        return None
    if output.failure():
        found.append(Finding(where, function, output.failure()))
        return None
    members: List[str] = []
    for member in output.text.split():
        if member in members:
            found.append(Finding(where, function, f"lists {member} twice: once kept", error=False))
        elif member not in systems:
            retired = os.path.isfile(os.path.join(directory, "scripts", "systems", SKIPPED_FOLDER, member))
            why = "in scripts/systems/unavailable/" if retired else "not a system of this lab"
            found.append(Finding(where, function, f"lists {member}, {why}: left out", error=False))
        else:
            members.append(member)
    if not members:
        found.append(Finding(where, function, "no members: the pool is left out", error=False))
        return None
    return ImportedPool(pool.name, members)


def _sourcing(files: Sequence[LabFile], outputs: Dict[Tuple[str, str], Output], shell: str) -> List[Finding]:
    """An error for each file the shell could not source, a warning for one that complained (bash
    goes on after a syntax error in a sourced file)."""
    hint = "" if os.path.basename(shell) == "bash" else "; --shell bash reads files written for bash"
    found = []
    for item in files:
        loaded = outputs[(item.where, "load")]
        if loaded.status != "0":
            said = _said(loaded.stderr)
            found.append(Finding(item.where, "", f"cannot be sourced: it exits, or has a syntax error"
                                                 f"{said}{hint if said else ''}"))
        elif loaded.stderr.strip():
            found.append(Finding(item.where, "", f"said on stderr when sourced{_said(loaded.stderr)}", error=False))
    return found


def import_lab(directory: str, tftpboot: str, shell: str, time_limit: float = TIME_LIMIT) -> LabImport:
    """The mq.sh lab in ``directory`` (its boards' reboot scripts under ``tftpboot``), read by
    ``shell``, with every finding (BadInputError when it is not an mq.sh lab)."""
    lab = LabImport(check_directory(directory), check_tftpboot(tftpboot))
    systems, found = lab_files(lab.directory, "systems")
    pools: List[LabFile] = []
    if os.path.isdir(os.path.join(lab.directory, "scripts", "pools")):
        pools, more = lab_files(lab.directory, "pools")
        found += more
    if not systems:
        found.append(Finding("scripts/systems", "", "no system files"))
    outputs, unfinished = ask_shell(systems, pools, shell, lab.directory, time_limit)
    lab.findings = found + unfinished
    if unfinished:
        return lab  # what the shell said before it stopped is not the whole lab
    found += _sourcing((*systems, *pools), outputs, shell)
    broken = {f.where for f in found if f.error}
    lab.systems = [s for s in (import_system(system, outputs, lab.tftpboot, found)
                               for system in systems if system.where not in broken) if s is not None]
    names = [s.name for s in lab.systems]
    lab.pools = [p for p in (import_pool(pool, outputs[(pool.where, "members")], names, lab.directory, found)
                             for pool in pools if pool.where not in broken) if p is not None]
    lab.findings = found
    return lab


__all__ = ["SKIPPED_FOLDER", "TIME_LIMIT", "boot_words", "check_directory", "check_tftpboot", "import_lab",
           "import_pool", "import_system", "lab_files"]
