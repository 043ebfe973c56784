"""Where ``mq`` finds its lab: option > environment > config file > built-in default.

Each case runs the real CLI in a child process with a controlled environment
(the autouse ``isolated_env`` fixture gives a fresh HOME and no MQ_* variables).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

NO_HOST = "mq-no-such-host.invalid"  # .invalid never resolves (RFC 2606)


def make_named_lab(root: Path, system: str) -> Path:
    """A lock directory whose inventory has one system, named after the lab."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lab.toml").write_text(f'[systems.{system}]\narch = "arm"\n')
    return root


def env_with(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


def spawn(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mq", *args], env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_all(*runs: tuple[Mapping[str, str], tuple[str, ...]],
            timeout: float = 20) -> list[subprocess.CompletedProcess[str]]:
    procs = [spawn(env, *args) for env, args in runs]
    done = []
    for (_, args), proc in zip(runs, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return done


@pytest.fixture
def labs(tmp_path: Path) -> dict[str, Path]:
    return {name: make_named_lab(tmp_path / name, name) for name in ("opt", "env", "cfg", "home", "lab")}


def write_config(path: Path, **keys: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'{key} = "{value}"\n' for key, value in keys.items()))
    return path


def test_precedence_option_env_file_default(labs: dict[str, Path], isolated_env: Path, tmp_path: Path) -> None:
    explicit = write_config(tmp_path / "explicit.toml", host="local", base=str(labs["cfg"]))
    home_file = write_config(isolated_env / ".config" / "mq" / "config.toml", base=str(labs["home"]))
    both = env_with(MQ_CONFIG=str(explicit), MQ_BASE=str(labs["env"]))
    simple = ("systems", "simple")
    results = run_all(
        (both, ("--host", "local", "--base", str(labs["opt"]), *simple)),  # option beats env and file
        (both, simple),  # env beats file
        (env_with(MQ_CONFIG=str(explicit)), simple),  # $MQ_CONFIG
        (env_with(), simple),  # ~/.config/mq/config.toml
        (env_with(MQ_BASE=str(labs["env"]), MQ_LAB=str(labs["lab"] / "lab.toml")), simple),  # MQ_LAB names the file
        (env_with(MQ_HOST=NO_HOST, MQ_BASE=str(labs["env"])), ("--host", "local", *simple)),  # option host
        (env_with(MQ_CONFIG=str(write_config(tmp_path / "remote.toml", host=NO_HOST, base=str(labs["cfg"]))),
                  MQ_HOST="local"), simple),  # env host beats file host
        (env_with(MQ_CONFIG=str(write_config(tmp_path / "labkey.toml", base=str(labs["env"]),
                                             lab=str(labs["lab"] / "lab.toml")))), simple),  # file key `lab`
    )
    shown = [(p.returncode, p.stdout.strip()) for p in results]
    assert shown == [(0, "opt"), (0, "env"), (0, "cfg"), (0, "home"), (0, "lab"), (0, "env"), (0, "cfg"),
                     (0, "lab")], [p.stderr for p in results]
    assert all(p.stderr == "" for p in results), "a configured lab prints no notice"
    assert home_file.exists()
    assert not (isolated_env / ".local" / "share" / "mq").exists(), "no demo lab when configured"


def test_lab_file_and_lock_directory_are_separate(labs: dict[str, Path]) -> None:
    """MQ_LAB picks the inventory; the locks still go to MQ_BASE."""
    env = env_with(MQ_BASE=str(labs["env"]), MQ_LAB=str(labs["lab"] / "lab.toml"))
    (taken,) = run_all((env, ("sem", "-wait", "lab", "-t", "0")))
    assert (taken.returncode, taken.stdout) == (0, "lab\n"), taken.stderr
    assert (labs["env"] / "lab.lock").exists()
    assert not (labs["lab"] / "lab.lock").exists()


def test_no_configuration_creates_demo_lab_and_says_so_once(isolated_env: Path) -> None:
    data = isolated_env / ".local" / "share" / "mq"
    first = subprocess.run([sys.executable, "-m", "mq", "systems"], env=env_with(), capture_output=True, text=True,
                           timeout=20, check=False)
    assert first.returncode == 0, first.stderr
    notice = first.stderr.splitlines()
    assert len(notice) == 1
    assert "demo lab" in notice[0] and str(data) in notice[0]
    assert (data / "lab.toml").is_file()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert first.stdout.splitlines()[0].split()[0] == "name"
    assert "odroidc4_1" in first.stdout

    second, locked = run_all((env_with(), ("systems", "simple")), (env_with(), ("sem", "-wait", "sabre", "-t", "0")))
    assert second.returncode == 0 and second.stderr == "", "the notice is shown once"
    assert "sabre" in second.stdout.split()
    assert (locked.returncode, locked.stdout, locked.stderr.count("demo lab")) == (0, "sabre\n", 0)
    assert (data / "sabre.lock").exists()


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    def config(name: str, text: str) -> dict[str, str]:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return env_with(MQ_CONFIG=str(path))

    bad_lab = tmp_path / "badlab"
    bad_lab.mkdir()
    (bad_lab / "lab.toml").write_text('[systems.b1]\nfiles = "many"\n')
    cases = [
        (config("unknown.toml", 'colour = "red"\n'), "unknown.toml", "colour"),
        (config("type.toml", "base = 3\n"), "type.toml", "base"),
        (config("syntax.toml", "base = \n"), "syntax.toml", ""),
        (config("transport.toml", 'transport = "pigeon"\n'), "transport.toml", "transport"),
        (env_with(MQ_CONFIG=str(tmp_path / "missing.toml")), "missing.toml", ""),
        (env_with(MQ_HOST="local", MQ_BASE=str(bad_lab)), "badlab/lab.toml", "systems.b1.files"),
        (env_with(MQ_HOST="local", MQ_BASE=str(tmp_path / "nolab")), "nolab", "lock directory does not exist"),
    ]
    results = run_all(*[(env, ("systems", "simple")) for env, _, _ in cases])
    for (_, file, key), proc in zip(cases, results, strict=True):
        assert proc.returncode == (7 if file == "nolab" else 6), (file, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert file in lines[0]
        if key and " " in key:
            assert key in lines[0], lines[0]
        elif key:
            assert f": {key}:" in lines[0], lines[0]
        assert "Traceback" not in proc.stderr


def test_unreachable_host_clear_error(tmp_path: Path) -> None:
    """A non-local host that cannot be reached: exit 9 with mq.sh's ``Unable to ssh to HOST``
    first, the line seL4's CI looks for, then the reason; no traceback."""
    cfg = write_config(tmp_path / "remote.toml", host=NO_HOST)
    results = run_all((env_with(), ("--host", NO_HOST, "--base", "/var/cache/machinelocks", "sem", "-info", "b1")),
                      (env_with(MQ_HOST=NO_HOST), ("systems",)),
                      (env_with(MQ_CONFIG=str(cfg)), ("sem", "-wait", "b1", "-t", "0")), timeout=15)
    for proc in results:
        assert proc.returncode == 9, proc
        assert proc.stdout == ""
        assert proc.stderr.splitlines()[0] == f"mq: Unable to ssh to {NO_HOST}", proc.stderr
        assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr


def test_legacy_mq_sh_config_is_read_never_run(tmp_path: Path) -> None:
    """mq.sh users' ``~/.mq`` keeps working: HOST and BASE are read, the file is never executed."""
    from mq.settings.config import load_config

    canary = tmp_path / "ran"
    (tmp_path / ".mq").write_text(f'touch {canary}\nHOST=tftp.lab\nexport BASE="/var/cache/locks"  # lab\n'
                                  f"HOST2=$(touch {canary})\n")
    config = load_config(env={"HOME": str(tmp_path)})
    assert (config.host, config.base) == ("tftp.lab", "/var/cache/locks")
    assert not canary.exists()
    (tmp_path / ".config" / "mq").mkdir(parents=True)
    (tmp_path / ".config" / "mq" / "config.toml").write_text('host = "local"\n')
    assert load_config(env={"HOME": str(tmp_path)}).host == "local"  # config.toml wins over ~/.mq
