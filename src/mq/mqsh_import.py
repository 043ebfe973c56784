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
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .engine.errors import BadInputError, safe_text
from .engine.inventory import parse_inventory
from .engine.names import valid_name

TIME_LIMIT = 30.0  # seconds for the whole shell (a lab of 50 systems takes well under one)
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
SKIPPED_FOLDER = "unavailable"  # retired boards and pools, which mq.sh does not read

TEXT_FIELDS = (("Arch", "arch"), ("ISA", "isa"), ("SOC", "soc"), ("CPU", "cpu"), ("Cores", "cores"),
               ("RAM", "ram"), ("MaxCLK", "max_clk"), ("Sel4Plat", "sel4_plat"))
FLAG_FIELDS = (("PXELinux", "pxe_linux"), ("DTB", "dtb"))  # mq.sh takes exactly "yes" for yes
_COUNT = re.compile(r"[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DRIVER_PLACE = re.compile(r"^\S*/mq-import-[^/]*/import\.sh: (line )?[0-9]+: ")

Value = Union[str, int, bool]


def _shown(text: str) -> str:
    """A value in a message: quoted, on one line, cut after 64 characters."""
    return f'"{safe_text(text, 64)}"'


def _said(stderr: str) -> str:
    """`` (its last line)`` of what a shell said on stderr, for a message ('' when it said nothing),
    without the place in this module's own script that the shell puts first."""
    lines = stderr.strip().splitlines()
    return f" ({safe_text(_DRIVER_PLACE.sub('', lines[-1]), 200)})" if lines else ""


# The shell side: one record of three NUL-terminated fields (status, text, stderr) per step, on
# fd 3, which the lab's code never sees; what it prints itself goes to /dev/null. "none": no such
# function. A file is sourced twice: in a subshell first, to see that it neither exits nor fails
# to parse (either would end the shell), then for real. A power-off probe's text is R and what
# RebootShutdown was given, or E and the function's status.
_DRIVER = r"""exec 3>&1 >/dev/null </dev/null
__mqi_err=$1
__mqi_emit() { printf '%s\0%s\0%s\0' "$1" "$2" "$3" >&3; }
__mqi_stderr() { if [ -s "$__mqi_err" ]; then cat "$__mqi_err"; fi; }
__mqi_load() {
    if [ "$( { . "$1"; } >/dev/null 2>"$__mqi_err" 3>&-; printf x )" = x ]; then
        . "$1" >/dev/null 2>&1 3>&-
        __mqi_emit 0 "" "$(__mqi_stderr)"
    else
        __mqi_emit 1 "" "$(__mqi_stderr)"
    fi
}
__mqi_call() {
    __mqi_f=$1
    shift
    if ! command -v "$__mqi_f" >/dev/null 2>&1; then
        __mqi_emit none "" ""
        return
    fi
    __mqi_v=$("$__mqi_f" "$@" 2>"$__mqi_err" 3>&-)
    __mqi_s=$?
    if [ "$__mqi_s" -eq 0 ]; then
        __mqi_emit 0 "$__mqi_v" ""
    else
        __mqi_emit "$__mqi_s" "$__mqi_v" "$(__mqi_stderr)"
    fi
}
__mqi_power_off() {
    if ! command -v "$1" >/dev/null 2>&1; then
        __mqi_emit none "" ""
        return
    fi
    __mqi_v=$(
        exec 4>&1 >/dev/null 2>"$__mqi_err" 3>&-
        RebootShutdown() { printf 'R%s' "$1" >&4; exit 0; }
        PATH=/nonexistent
        "$1"
        printf 'E%s' "$?" >&4
    )
    __mqi_emit 0 "$__mqi_v" "$(__mqi_stderr)"
}
"""


@dataclass(frozen=True)
class Finding:
    """A problem (``error``: nothing may be written) or a warning, at a lab file and function."""

    where: str  # the file, from the lab's folder: scripts/systems/NAME
    function: str  # Cores_NAME; "" for the file itself
    message: str
    error: bool = True

    def line(self) -> str:
        parts = [self.where, *([self.function] if self.function else [])]
        return ": ".join([*parts, ("" if self.error else "warning: ") + self.message])


@dataclass(frozen=True)
class LabFile:
    """A system's or pool's file: its name (the file's), where it is in the lab, its path."""

    name: str
    where: str
    path: str


@dataclass(frozen=True)
class Output:
    """What one step in the shell gave: its status (None: no such function), text and stderr."""

    status: Optional[str]
    text: str
    stderr: str

    def failure(self) -> str:
        """Why the function gave no value ('' when it did)."""
        if self.status is None:
            return "function not defined"
        if self.status != "0":
            return f"exited {self.status}{_said(self.stderr)}"
        return ""


@dataclass
class ImportedSystem:
    name: str
    values: Dict[str, Value]  # in lab.toml's order
    notes: List[str] = field(default_factory=list)  # comments above its table


@dataclass
class ImportedPool:
    name: str
    members: List[str]


@dataclass
class LabImport:
    """The lab as mq.sh sees it, and every finding; only to be written when ``errors`` is empty."""

    directory: str
    tftpboot: str
    systems: List[ImportedSystem] = field(default_factory=list)
    pools: List[ImportedPool] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)

    @property
    def errors(self) -> List[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if not f.error]


@dataclass(frozen=True)
class Step:
    """One thing the shell does for a lab file: ``load`` it, ``call`` a function, probe a power-off."""

    owner: str  # the file's ``where``
    key: str  # what it is for: load, files, files -L, name, arch ..., power_off, members
    command: Tuple[str, ...]  # the driver's function and its arguments


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


# -- the shell --------------------------------------------------------------------------------------
def plan(systems: Sequence[LabFile], pools: Sequence[LabFile]) -> List[Step]:
    """Every step, in order: load the systems, then the pools (which may call the systems'
    functions), then ask each system and pool for its values."""
    steps = [Step(f.where, "load", ("__mqi_load", f.path)) for f in (*systems, *pools)]
    for system in systems:
        name = system.name
        steps.append(Step(system.where, "files", ("__mqi_call", f"SystemNumFiles_{name}")))
        steps.append(Step(system.where, "files -L", ("__mqi_call", f"SystemNumFiles_{name}", "-L")))
        steps.append(Step(system.where, "name", ("__mqi_call", f"SystemName_{name}")))
        steps += [Step(system.where, attr, ("__mqi_call", f"{prefix}_{name}"))
                  for prefix, attr in (*TEXT_FIELDS, *FLAG_FIELDS)]
        steps.append(Step(system.where, "power_off", ("__mqi_power_off", f"SystemPowerOff_{name}")))
    steps += [Step(pool.where, "members", ("__mqi_call", f"Systems_{pool.name}")) for pool in pools]
    return steps


def driver(steps: Sequence[Step], systems: Sequence[LabFile], pools: Sequence[LabFile]) -> str:
    """The shell script that runs ``steps``: the protocol, mq.sh's list helpers, one line a step."""
    def lister(function: str, files: Sequence[LabFile]) -> str:
        names = " ".join(shlex.quote(f.name) for f in files)
        return f"{function}() {{ printf '%s\\n' {names}; }}" if files else f"{function}() {{ :; }}"

    lines = [_DRIVER, lister("SystemList", systems), lister("PoolList", pools)]
    lines += [" ".join(shlex.quote(word) for word in step.command) for step in steps]
    return "\n".join(lines) + "\n"


def run_shell(script: str, shell: str, directory: str, time_limit: float) -> Tuple[List[Output], str, bool]:
    """Run ``script`` in ``shell`` with a clean environment; its records, its own stderr, and whether
    it was stopped at ``time_limit`` (with all it started)."""
    with tempfile.TemporaryDirectory(prefix="mq-import-") as scratch:
        path = os.path.join(scratch, "import.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(script)
        env = {"PATH": CLEAN_PATH, "HOME": scratch, "SCRIPT_PATH": directory, "LC_ALL": "C"}
        try:
            proc = subprocess.Popen([shell, path, os.path.join(scratch, "stderr")], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=scratch,
                                    start_new_session=True)
        except OSError as exc:
            raise BadInputError(f"cannot run the shell {_shown(shell)}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=time_limit)
            stopped = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            stopped = True
    return records(out), err.decode("utf-8", "replace"), stopped


def records(out: bytes) -> List[Output]:
    """The shell's records; a field that is not UTF-8 becomes the replacement character (``_value``
    refuses it)."""
    fields = out.split(b"\0")[:-1]
    decoded = [part.decode("utf-8", "replace") for part in fields]
    return [Output(None if decoded[i] == "none" else decoded[i], decoded[i + 1], decoded[i + 2])
            for i in range(0, len(decoded) - 2, 3)]


def ask_shell(systems: Sequence[LabFile], pools: Sequence[LabFile], shell: str, directory: str,
              time_limit: float) -> Tuple[Dict[Tuple[str, str], Output], List[Finding]]:
    """Every step's output by (file, key), and an error for a step the shell never finished."""
    steps = plan(systems, pools)
    outputs, stderr, stopped = run_shell(driver(steps, systems, pools), shell, directory, time_limit)
    found: List[Finding] = []
    if len(outputs) < len(steps):
        step = steps[len(outputs)]
        why = f"did not finish within {time_limit:g} s" if stopped else f"ended the shell{_said(stderr)}"
        found.append(Finding(step.owner, _shown_function(step), why + ": nothing after it was read"))
    return {(step.owner, step.key): output for step, output in zip(steps, outputs, strict=False)}, found


def _shown_function(step: Step) -> str:
    return "" if step.key == "load" else " ".join(step.command[1:])


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


# -- the lab file -----------------------------------------------------------------------------------
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


__all__ = ["Finding", "ImportedPool", "ImportedSystem", "LabImport",
           "boot_words", "check_output", "import_lab", "lab_toml", "write_lab"]
