"""Shell completion through real shells on a pty: zsh (``compinit`` from ``fpath``), bash
(the script sourced, and loaded by bash-completion) and fish (sourced, and autoloaded),
for both names, ``mq`` and ``mq.sh``; and the offline cache of a remote lab's names.

Each case types a command line and TAB into a fresh interactive shell whose own rc files
are not read (HOME is the test's), and reads what the shell lists, or what it put on the
line (Ctrl+A, ``show ``, Enter: the completed line comes back between ``<`` and ``>``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from conftest import LabFixture, SshLab
from mq.cli.docs import ROOT

COMPLETIONS = ROOT / "completions"
NAMES = ["b1", "b2", "b3", "solo", "x86a", "x86b", "trio", "pair", "x86"]  # tests/conftest.py LAB_TOML
POOL_NAMES = {"trio", "pair", "x86"}
COMMANDS = ["sem", "systems", "system-tsv"]  # what `mq s<TAB>` offers
PROGS = ["mq", "mq.sh"]
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
_BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """A directory with ``mq`` and ``mq.sh``: this environment's console scripts, or the same two
    lines of Python when the package is not installed here."""
    installed = Path(sys.executable).parent
    if all(os.access(installed / name, os.X_OK) for name in PROGS):
        return installed
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in PROGS:
        shim = shims / name
        shim.write_text(f"#!{sys.executable}\nimport sys\nfrom mq.cli.launch import run\nsys.exit(run())\n")
        shim.chmod(0o755)
    return shims


@pytest.fixture
def shell_env(lab: LabFixture, bindir: Path, isolated_env: Path) -> dict[str, str]:
    """A shell's environment: the test's HOME, ``mq`` first on PATH, the local test lab."""
    return {**lab.env, "HOME": str(isolated_env), "PATH": f"{bindir}:{os.environ['PATH']}", "TERM": "xterm",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class Shell:
    """An interactive shell on a pty; ``setup`` lines run first."""

    def __init__(self, argv: list[str], env: dict[str, str], setup: list[str], cwd: Path) -> None:
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(cwd), encoding="utf-8",
                                   codec_errors="replace", timeout=30, dimensions=(50, 220))
        self.synced = 0
        for line in setup:
            self.child.sendline(line)
        self.sync()

    def sync(self) -> None:
        """Wait until the shell has run everything typed so far (a marker the echo of the typed line lacks)."""
        self.synced += 1
        self.child.sendline(f"printf 'SYNC%s\\n' -{self.synced}-")
        self.child.expect(f"SYNC-{self.synced}-")

    def listed(self, line: str, expected: list[str]) -> str:
        """Type ``line`` and one TAB; wait until every ``expected`` word is on the screen; the screen."""
        self.child.send(line + "\t")
        seen = ""
        deadline = time.monotonic() + 15
        while not all(re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", seen) for word in expected):
            if time.monotonic() > deadline:
                raise AssertionError(f"after {line!r} TAB, not all of {expected} listed; the screen:\n{seen}")
            try:
                seen += _ANSI.sub("", self.child.read_nonblocking(4096, timeout=1))
            except pexpect.TIMEOUT:
                continue
        self.child.send("\x03")  # abandon the line
        self.sync()
        return seen

    def completed(self, line: str) -> str:
        """Type ``line`` and one TAB; the command line the shell made of it."""
        self.child.send(line + "\t")
        self.child.send("\x01show \r")  # Ctrl+A: to the start of the line (the shells queue typeahead)
        self.child.expect(r"<((?:mq|mq\.sh)\b[^<>\r\n]*)>\r\n")
        line = str(self.child.match.group(1)).rstrip()
        self.sync()
        return line

    def close(self) -> None:
        self.child.sendline("exit")
        try:
            self.child.expect(pexpect.EOF, timeout=10)
        finally:
            self.child.close(force=True)


@pytest.fixture
def shells() -> Iterator[list[Shell]]:
    started: list[Shell] = []
    yield started
    for shell in started:
        if shell.child.isalive():
            shell.child.close(force=True)


def zsh(env: dict[str, str], home: Path, shells: list[Shell], fpath: Path = COMPLETIONS) -> Shell:
    """zsh as a user who put ``_mq`` in ``fpath`` and runs compinit in ~/.zshrc (ZDOTDIR: the test's)."""
    (home / ".zshrc").write_text(
        f"fpath=({fpath} $fpath)\nautoload -Uz compinit\ncompinit -u -d {home}/.zcompdump\n"
        "bindkey -e\nunsetopt PROMPT_SP BEEP\nunset zle_bracketed_paste\nPROMPT='READY> '\n"
        "show() { print -r -- \"<$*>\" }\n")
    shell = Shell([_tool("zsh"), "--no-globalrcs", "-i"], {**env, "ZDOTDIR": str(home)}, [], home)
    shells.append(shell)
    return shell


def bash(env: dict[str, str], home: Path, shells: list[Shell], loader: bool) -> Shell:
    """bash with the script sourced, or (``loader``) with bash-completion loading it from the user's
    completions directory on the first TAB, as the README installs it."""
    setup = ["PS1='READY> '", "bind 'set show-all-if-ambiguous on'", "bind 'set bell-style none'",
             "show() { printf '<%s>\\n' \"$*\"; }"]
    if loader:
        if not _BASH_COMPLETION.exists():
            pytest.skip("bash-completion is not installed (.ci/run installs it)")
        target = home / ".local" / "share" / "bash-completion" / "completions"
        target.mkdir(parents=True)
        for name in ("mq.bash", "mq.sh.bash"):
            shutil.copy(COMPLETIONS / name, target / name)
        setup.insert(0, f"source {_BASH_COMPLETION}")
    else:
        setup.insert(0, f"source {COMPLETIONS / 'mq.bash'}")
    shell = Shell([_tool("bash"), "--norc", "--noprofile", "-i"], env, setup, home)
    shells.append(shell)
    return shell


def fish(env: dict[str, str], home: Path, shells: list[Shell], autoload: bool) -> Shell:
    """fish with the script sourced, or (``autoload``) found by name in a completions directory."""
    setup = ["function fish_prompt; echo -n 'READY> '; end", "function fish_greeting; end",
             "function show; printf '<%s>\\n' \"$argv\"; end", "set -g fish_autosuggestion_enabled 0"]
    if autoload:
        target = home / "fish-completions"
        target.mkdir()
        for name in ("mq.fish", "mq.sh.fish"):
            shutil.copy(COMPLETIONS / name, target / name)
        setup.append(f"set -g fish_complete_path {target} $fish_complete_path")
    else:
        setup.append(f"source {COMPLETIONS / 'mq.fish'}")
    exe = _tool("fish")
    # HOME is the test's, so there is no user configuration either way; fish before 3.3 lacks the flag
    quiet = ["--no-config"] if subprocess.run([exe, "--no-config", "-c", "true"], env=env, capture_output=True,
                                              timeout=30).returncode == 0 else []
    shell = Shell([exe, *quiet, "-i"], env, setup, home)
    shells.append(shell)
    return shell


def _check(shell: Shell, prog: str) -> None:
    """Commands, then system and pool names (listed, and one completed), under the name ``prog``."""
    screen = shell.listed(f"{prog} s", COMMANDS)
    assert "pool-tsv" not in screen  # only what starts with "s"
    shell.listed(f"{prog} sem -wait ", NAMES)
    assert shell.completed(f"{prog} sem -wait so") == f"{prog} sem -wait solo"
    assert shell.completed(f"{prog} po") == f"{prog} pool-tsv"
    assert shell.completed(f"{prog} run -s tr") == f"{prog} run -s trio"
    shell.close()


# -- zsh ---------------------------------------------------------------------------------------
def test_zsh_script_is_a_compdef_file() -> None:
    assert (COMPLETIONS / "_mq").read_text().splitlines()[0] == "#compdef mq mq.sh"


def test_zsh_compinit_registers_both_names_from_fpath(shell_env: dict[str, str], isolated_env: Path,
                                                      shells: list[Shell]) -> None:
    shell = zsh(shell_env, isolated_env, shells)
    shell.child.sendline("print -r -- \"<mq ${_comps[mq]} ${_comps[mq.sh]}>\"")
    shell.child.expect(r"<mq ([^<>\r\n]*)>\r\n")
    assert shell.child.match.group(1) == "_mq _mq"


@pytest.mark.parametrize("prog", PROGS)
def test_zsh_completes_on_the_first_tab(shell_env: dict[str, str], isolated_env: Path, shells: list[Shell],
                                        prog: str) -> None:
    """The very first TAB of the session (``_mq`` autoloaded then) already lists and completes."""
    shell = zsh(shell_env, isolated_env, shells)
    assert shell.completed(f"{prog} sem -info so") == f"{prog} sem -info solo"
    _check(zsh(shell_env, isolated_env, shells), prog)


# -- bash --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loader", [False, True], ids=["sourced", "bash-completion"])
@pytest.mark.parametrize("prog", PROGS)
def test_bash_completes(shell_env: dict[str, str], isolated_env: Path, shells: list[Shell], prog: str,
                        loader: bool) -> None:
    _check(bash(shell_env, isolated_env, shells, loader), prog)


# -- fish --------------------------------------------------------------------------------------
@pytest.mark.parametrize("autoload", [False, True], ids=["sourced", "autoloaded"])
@pytest.mark.parametrize("prog", PROGS)
def test_fish_completes(shell_env: dict[str, str], isolated_env: Path, shells: list[Shell], prog: str,
                        autoload: bool) -> None:
    _check(fish(shell_env, isolated_env, shells, autoload), prog)


# -- the protocol, without a shell -------------------------------------------------------------
@pytest.mark.parametrize(("line", "pools"), [("status ", True), ("history ", True), ("offline ", False),
                                             ("online ", False), ("status b1 ", True)])
def test_the_newer_commands_complete_names_too(shell_env: dict[str, str], line: str, pools: bool) -> None:
    """Each completes the names it takes: ``offline`` and ``online`` take a board, not a pool."""
    words = f"mq {line}"
    done = subprocess.run(["mq"], env={**shell_env, "_MQ_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                       "COMP_CWORD": str(len(words.split()))},
                          capture_output=True, text=True, timeout=30)
    expected = NAMES if pools else [n for n in NAMES if n not in POOL_NAMES]
    assert (done.returncode, done.stdout.split()) == (0, expected), done.stderr


@pytest.mark.parametrize("prog", PROGS)
def test_both_names_answer_completion_requests(shell_env: dict[str, str], prog: str) -> None:
    """``_MQ_COMPLETE`` set: the program lists completions (under ``mq.sh`` too), it runs no command."""
    done = subprocess.run([prog], env={**shell_env, "_MQ_COMPLETE": "complete_bash",
                                       "COMP_WORDS": f"{prog} sem -signal ", "COMP_CWORD": "3"},
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.split()) == (0, NAMES), done.stderr


@pytest.mark.parametrize("prog", PROGS)
def test_names_come_from_the_lab_the_line_names(shell_env: dict[str, str], tmp_path: Path, prog: str) -> None:
    """``mq --base OTHER sem -wait <TAB>`` offers OTHER's names, as the command would use OTHER."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "lab.toml").write_text("[systems.elsewhere1]\n[systems.elsewhere2]\n")
    words = f"{prog} --host local --base {other} sem -wait "
    done = subprocess.run([prog], env={**shell_env, "_MQ_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                       "COMP_CWORD": str(len(words.split()))},
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["elsewhere1", "elsewhere2"], done.stderr


def test_names_follow_the_name_and_the_options(isolated_env: Path, lab: LabFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Completing for ``mq.sh`` reads mq.sh's configuration (``~/.mq`` first), for ``mq`` mq's;
    ``--host``/``--base`` on the line win, as they do when the command runs."""
    from mq.client import inventory_cache
    from mq.settings.config import load_config

    config_dir = isolated_env / ".config" / "mq"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(f'host = "local"\nbase = "{lab.base}"\n')
    (isolated_env / ".mq").write_text("HOST=tftp.example\nBASE=/var/cache/machinelocks\n")
    remote = load_config(mqsh=True)
    assert remote.host == "tftp.example"
    inventory_cache.save(remote, {"systems": [{"name": "far1"}], "pools": [{"name": "farpool"}]})
    assert inventory_cache.names("", mqsh=False) == NAMES
    assert inventory_cache.names("", mqsh=True) == ["far1", "farpool"]
    assert inventory_cache.names("far", host="tftp.example", base="/var/cache/machinelocks") == ["far1", "farpool"]
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/mq.sh"])
    assert inventory_cache.names("f") == ["far1", "farpool"]


# -- the cache of a remote lab's names ---------------------------------------------------------
def _cache(ssh_lab: SshLab) -> Path:
    found = list((ssh_lab.client_dir / ".cache" / "mq").glob("inventory-*.json"))
    assert len(found) <= 1
    return found[0] if found else ssh_lab.client_dir / ".cache" / "mq" / "missing.json"


def _cached_names(ssh_lab: SshLab) -> list[str]:
    data = json.loads(_cache(ssh_lab).read_text())
    return [s["name"] for s in data["systems"]] + [p["name"] for p in data["pools"]]


def test_every_command_that_reads_the_inventory_refreshes_the_cache(ssh_lab: SshLab, bindir: Path) -> None:
    """Not only ``mq systems``: ``sem`` (whose host reads the inventory), the other listings and
    ``mq.sh``. Completion then answers from the cache, without a connection."""
    user = "mqalice"
    done = ssh_lab.mq(user, "sem", "-info", "b1")
    assert done.returncode == 0, done.stderr
    assert _cached_names(ssh_lab) == NAMES  # there was no cache: sem filled it

    cache = _cache(ssh_lab)
    stale = {"path": "x", "systems": [{"name": "b1"}], "pools": []}
    cache.write_text(json.dumps(stale))
    before = cache.stat().st_mtime_ns
    assert ssh_lab.mq(user, "sem", "-mr-info", "b1").returncode == 0
    assert cache.stat().st_mtime_ns == before  # it knows b1: no extra request
    assert ssh_lab.mq(user, "sem", "-mr-info", "solo").returncode == 0
    assert _cached_names(ssh_lab) == NAMES  # solo was missing: refreshed

    for args in (["system-tsv"], ["pool-tsv"], ["features"], ["systems", "simple"]):
        cache.write_text(json.dumps(stale))
        done = ssh_lab.mq(user, *args)
        assert done.returncode == 0, done.stderr
        assert _cached_names(ssh_lab) == NAMES, args

    cache.unlink()
    env = {**ssh_lab.env(user), "PATH": f"{bindir}:{os.environ['PATH']}"}
    done = subprocess.run(["mq.sh", "sem", "-info", "b2"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _cached_names(ssh_lab) == NAMES

    logins = ssh_lab.sshd.accepted()
    for prog in PROGS:
        done = subprocess.run([prog], env={**env, "_MQ_COMPLETE": "complete_bash",
                                           "COMP_WORDS": f"{prog} sem -wait ", "COMP_CWORD": "3"},
                              capture_output=True, text=True, timeout=30)
        assert done.stdout.split() == NAMES, done.stderr
    assert ssh_lab.sshd.accepted() == logins  # completion never connects
