"""``mq check`` and inventory mistakes caught before anything is locked.

A set of broken lab files (``tests/data/broken_labs``, one mistake each, the
first line saying which key and message to expect) is checked with the real
``mq`` command, and the same files stop ``mq sem`` and ``mq run`` with the
configuration exit code before a lock, a ticket or an upload is made.
``mq check --host`` runs on a local lab, on a read-only one (as a test user)
and over SSH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import LAB_TOML, LabFixture, SshLab, engine, run_mq
from mq.engine.core.errors import ExitCode

BROKEN = Path(__file__).resolve().parent / "data" / "broken_labs"
BROKEN_LABS = sorted(BROKEN.glob("*.toml"))
PASS_IMG = Path(__file__).resolve().parent.parent / "examples" / "sel4test-pass.img"
SIMBOARD = 'boot = "{python} -m mq.engine.host.simboard {system} {files}"\n'
WITH_BOOT = LAB_TOML.replace("[systems.b1]\n", "[systems.b1]\n" + SIMBOARD)  # b1 only


def expected(path: Path) -> tuple[str, str]:
    """(key, message fragment) from the file's first line: ``# ... expect: KEY | FRAGMENT``."""
    key, fragment = path.read_text().splitlines()[0].split("expect: ", 1)[1].split(" | ", 1)
    return key.strip(), fragment.strip()


def problem_lines(stdout: str, source: str) -> list[str]:
    """The lines of ``mq check`` output that report a mistake in ``source``."""
    return [line for line in stdout.splitlines() if line.startswith(f"{source}: ")
            and not line.startswith(f"{source}: ok") and ": warning: " not in line]


def test_the_broken_labs_are_all_here() -> None:
    assert len(BROKEN_LABS) >= 12
    for path in BROKEN_LABS:
        assert expected(path)


@pytest.mark.parametrize("path", BROKEN_LABS, ids=lambda p: p.stem)
def test_check_reports_each_mistake_with_file_and_key(lab: LabFixture, path: Path) -> None:
    key, fragment = expected(path)
    proc = run_mq(lab, "check", str(path))
    assert proc.returncode == ExitCode.CONFIG, proc
    problems = problem_lines(proc.stdout, str(path))
    assert len(problems) == 1, proc.stdout
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert problems[0].startswith(prefix), problems
    assert fragment in problems[0]
    assert proc.stdout.splitlines()[0].startswith("configuration: ok")
    assert proc.stderr == f"mq: 1 problem in {path}\n"


@pytest.mark.parametrize("path", BROKEN_LABS, ids=lambda p: p.stem)
def test_a_broken_lab_stops_sem_and_run_before_anything_is_locked(lab: LabFixture, path: Path) -> None:
    key, fragment = expected(path)
    lab_file = lab.inventory
    lab_file.write_text(path.read_text())
    for args in (("sem", "-wait", "b1", "-w", "0", "-t", "0"),
                 ("run", "-s", "b1", "-c", "All is well", "-f", str(PASS_IMG)),
                 ("run", "-s", "arm", "-r")):
        proc = run_mq(lab, *args)
        assert proc.returncode == ExitCode.CONFIG, (args, proc)
        said = proc.stderr.removeprefix("mq: ")  # sem's errors start so, as mq's own words
        assert said.startswith(f"{lab_file}: {key}: " if key else f"{lab_file}: "), proc.stderr
        assert fragment in said
        assert len(proc.stderr.splitlines()) == 1
        assert "running on" not in proc.stderr
    assert lab.held() == set()
    assert lab.tickets() == []
    assert not (Path(os.environ["HOME"]) / ".cache" / "mq" / "jobs").exists() or \
        not list((Path(os.environ["HOME"]) / ".cache" / "mq" / "jobs").iterdir())


def test_check_collects_every_problem(lab: LabFixture, tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text(textwrap.dedent("""\
        [systems.b1]
        boot = "{python} x {sytem} {files"
        power_off = "off {file2}"
        [systems.b2]
        files = 0
        [systems."bad name"]
        [pools.p]
        systems = ["b1", "nope", "b1"]
        [pools.b2]
        match = { arch = "arm" }
        """))
    proc = run_mq(lab, "check", str(path))
    assert proc.returncode == ExitCode.CONFIG
    lines = problem_lines(proc.stdout, str(path))
    assert [line.split(": ")[1] for line in lines] == [
        "systems.b1.boot", "systems.b1.boot", "systems.b1.power_off", "systems.b2.files", 'systems."bad name"',
        "pools.p.systems", "pools.p.systems", "pools.b2",
    ]
    assert proc.stderr == f"mq: 8 problems in {path}\n"
    # any other command says the first, and that there are more
    lab.inventory.write_text(path.read_text())
    proc = run_mq(lab, "systems")
    assert proc.returncode == ExitCode.CONFIG
    said = proc.stderr.removeprefix("mq: ")
    assert said.startswith(f"{lab.base / 'lab.toml'}: systems.b1.boot: unknown placeholder {{sytem}}")
    assert said.rstrip().endswith("(and 7 more problems: mq check lists them all)")


def test_check_of_the_configured_lab(lab: LabFixture) -> None:
    proc = run_mq(lab, "check")
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines() == [
        f"configuration: ok (host local, base {lab.base}, lab {lab.base / 'lab.toml'})",
        f"{lab.base / 'lab.toml'}: systems: warning: no system has a boot command: mq run cannot boot any "
        "(sem and run -r work)",
        f"{lab.base / 'lab.toml'}: ok (6 systems, 3 pools)",
    ]
    assert proc.stderr == "mq: no problems, 1 warning\n"
    assert sorted(os.listdir(lab.base)) == ["lab.toml"]  # nothing was made


def test_check_of_a_missing_lock_directory_says_so_as_every_command_does(tmp_path: Path) -> None:
    """``base`` names no directory: ``mq check`` fails as ``mq sem -info`` does (exit 7), not
    "configuration: ok" and then a missing lab.toml."""
    missing = LabFixture(base=tmp_path / "no-such-lab")
    check = run_mq(missing, "check")
    info = run_mq(missing, "sem", "-info", "b1")
    assert check.returncode == info.returncode == ExitCode.LOCKDIR, (check, info)
    assert check.stdout == f"configuration: base: the lock directory does not exist: {missing.base}\n"
    assert f"the lock directory does not exist: {missing.base}" in info.stderr


def test_check_json(lab: LabFixture) -> None:
    lab.inventory.write_text(WITH_BOOT.replace("{system}", "{sytem}"))
    proc = run_mq(lab, "check", "--json")
    assert proc.returncode == ExitCode.CONFIG
    document = json.loads(proc.stdout)
    assert (document["mq"], document["kind"]) == (1, "check")
    data = document["data"]
    assert (data["ok"], data["exit_code"], data["problems"]) == (False, ExitCode.CONFIG, 1)
    problem = next(f for f in data["findings"] if f["status"] == "fail")
    assert problem["source"] == str(lab.inventory)
    assert problem["key"] == "systems.b1.boot"
    assert problem["detail"].startswith("unknown placeholder {sytem}")


def test_warnings_do_not_fail_the_check(lab: LabFixture, tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent("""\
        [systems.a]
        boot = "boot-it {system} {dtb}"
        [systems.b]
        boot = "boot-it {System} {files}"
        [systems.c]
        """))
    proc = run_mq(lab, "check", str(path))
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines()[1:] == [
        f"{path}: systems.a.boot: warning: uses neither {{files}} nor {{file1}}: the images given to mq run -f "
        "never reach the board",
        f"{path}: systems.a.boot: warning: {{dtb}} is always empty: the system takes no DTB (dtb = false)",
        f"{path}: systems.b.boot: warning: {{System}} is not a placeholder (they are lower case: {{system}}): "
        "it is passed on as written",
        f"{path}: systems.c.boot: warning: no boot command: mq run cannot boot c (sem and run -r work)",
        f"{path}: ok (3 systems, 0 pools)",
    ]
    assert proc.stderr == "mq: no problems, 4 warnings\n"


def test_literal_braces_that_pair_up_are_fine(lab: LabFixture, tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(textwrap.dedent("""\
        [systems.a]
        files = 2
        boot = "sh -c 'f() { cat \\"$1\\" | awk \\"{ print $1 }\\"; }; f \\"$0\\"' {file2} {{file1}} ${HOME}"
        power_off = "find /tmp/x -name {system} -exec rm {} ;"
        """))
    proc = run_mq(lab, "check", str(path))
    assert proc.returncode == 0, proc
    assert proc.stdout.splitlines()[-1] == f"{path}: ok (1 system, 0 pools)"


def test_a_broken_configuration_is_reported(lab: LabFixture, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('host = "local"\ncolour = "red"\n')
    env = {**lab.env, "MQ_CONFIG": str(config)}
    proc = subprocess.run([sys.executable, "-m", "mq", "check", str(BROKEN / "file0.toml")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == ExitCode.CONFIG
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{config}: colour: unknown key (known: host, base, lab")
    assert lines[1].startswith(f"{BROKEN / 'file0.toml'}: systems.b1.boot: unknown placeholder {{file0}}")
    assert proc.stderr == f"mq: 2 problems in {config}, {BROKEN / 'file0.toml'}\n"


def test_check_creates_the_demo_lab_like_any_command(lab: LabFixture) -> None:
    env = {k: v for k, v in lab.env.items() if k not in ("MQ_HOST", "MQ_BASE")}
    proc = subprocess.run([sys.executable, "-m", "mq", "check"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc
    assert "created a demo lab" in proc.stderr
    assert proc.stdout.splitlines()[-1].endswith("lab.toml: ok (5 systems, 2 pools)")


def test_run_on_a_system_without_boot_fails_before_locking(lab: LabFixture) -> None:
    lab.inventory.write_text(WITH_BOOT)
    proc = run_mq(lab, "run", "-s", "b2", "-c", "All is well", "-f", str(PASS_IMG))
    assert proc.returncode == ExitCode.CONFIG, proc
    assert proc.stderr.removeprefix("mq: ") == (f"{lab.base / 'lab.toml'}: systems.b2.boot: no boot command: "
                                                "mq run cannot boot b2 (sem and run -r work without one)\n")
    assert lab.held() == set() and lab.tickets() == [] and lab.audit() == []
    engine(lab).wait("b1", key="mine", budget=0)  # the pool's only member with a boot is busy: wait for it
    proc = run_mq(lab, "run", "-s", "trio", "-c", "All is well", "-f", str(PASS_IMG), "-w", "0", "-t", "0")
    assert proc.returncode == ExitCode.NOT_ACQUIRED, proc
    assert lab.held() == {"b1"}


def test_sem_and_reserve_need_no_boot(lab: LabFixture) -> None:
    lab.inventory.write_text(WITH_BOOT)
    assert run_mq(lab, "sem", "-wait", "b2", "-w", "0", "-t", "0").returncode == 0
    assert run_mq(lab, "sem", "-signal", "b2").returncode == 0
    proc = subprocess.run([sys.executable, "-m", "mq", "run", "-s", "b2", "-r"], env=lab.env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc
    proc = run_mq(lab, "run", "-s", "b1", "-c", "All is well", "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc
    assert lab.held() == set()


# -- mq check --host -----------------------------------------------------------------------------------
HOST_CHECKS = ("reachable", "lock directory", "lockfile(1)")


def host_lines(stdout: str, host: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        for check in HOST_CHECKS:
            if line.startswith(f"{host}: {check}: "):
                found[check] = line[len(f"{host}: {check}: "):]
    return found


def test_check_host_on_a_local_lab(lab: LabFixture) -> None:
    lab.inventory.write_text(WITH_BOOT)
    before = sorted(os.listdir(lab.base))
    proc = run_mq(lab, "check", "--host")
    assert proc.returncode == 0, proc
    checks = host_lines(proc.stdout, "local")
    assert set(checks) == set(HOST_CHECKS), proc.stdout
    assert all(result.startswith("ok") for result in checks.values()), checks
    assert checks["lock directory"] == f"ok ({lab.base} is writable by root)"
    assert sorted(os.listdir(lab.base)) == before  # every probe removed
    assert lab.held() == set()


def test_check_host_with_a_broken_lab_still_checks_the_host(lab: LabFixture) -> None:
    lab.inventory.write_text((BROKEN / "unbalanced_brace.toml").read_text())
    proc = run_mq(lab, "check", "--host")
    assert proc.returncode == ExitCode.CONFIG
    assert all(result.startswith("ok") for result in host_lines(proc.stdout, "local").values())
    assert proc.stderr == f"mq: 1 problem in {lab.base / 'lab.toml'}\n"


def test_check_host_finds_a_lock_directory_it_cannot_write(shared_lab: LabFixture) -> None:
    os.chmod(shared_lab.base, 0o2555)
    try:
        proc = run_mq(shared_lab, "check", "--host", user="mqalice")
    finally:
        os.chmod(shared_lab.base, 0o2775)
    assert proc.returncode == ExitCode.LOCKDIR, proc
    checks = host_lines(proc.stdout, "local")
    assert checks["reachable"].startswith("ok (no SSH, this machine: user mqalice on ")
    assert checks["lock directory"] == (f"FAIL: {shared_lab.base}: mqalice cannot create a file there "
                                        "(Permission denied)")
    assert checks["lockfile(1)"] == "skipped: not checked: the lock directory is not usable"
    assert proc.stderr == "mq: 1 problem in local\n"


def test_check_host_of_a_missing_lock_directory(lab: LabFixture, tmp_path: Path) -> None:
    env = {**lab.env, "MQ_BASE": str(tmp_path / "nowhere"), "MQ_LAB": str(lab.inventory)}
    proc = subprocess.run([sys.executable, "-m", "mq", "check", "--host"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == ExitCode.LOCKDIR
    assert host_lines(proc.stdout, "local")["lock directory"] == \
        f"FAIL: {tmp_path / 'nowhere'}: No such file or directory"


def test_check_host_over_ssh(ssh_lab: SshLab) -> None:
    before = sorted(os.listdir(ssh_lab.lab.base))
    proc = ssh_lab.mq("mqalice", "check", "--host")
    assert proc.returncode == 0, proc
    checks = host_lines(proc.stdout, "labhost")
    assert checks["reachable"].startswith("ok (over SSH: user mqalice on ")
    assert checks["lock directory"] == f"ok ({ssh_lab.lab.base} is writable by mqalice (group-writable: shared))"
    assert checks["lockfile(1)"].startswith("ok (a lock made by ")
    assert f"labhost:{ssh_lab.lab.inventory}: ok (6 systems, 3 pools)" in proc.stdout.splitlines()
    assert sorted(os.listdir(ssh_lab.lab.base)) == before


def test_check_over_ssh_reports_the_hosts_lab_file(ssh_lab: SshLab) -> None:
    lab_file = ssh_lab.lab.inventory
    lab_file.write_text((BROKEN / "misspelt_placeholder.toml").read_text())
    proc = ssh_lab.mq("mqalice", "check", "--host")
    assert proc.returncode == ExitCode.CONFIG, proc
    assert f"labhost:{lab_file}: systems.b1.boot: unknown placeholder {{sytem}}" in proc.stdout
    # the host's own checks need no inventory: they run all the same
    assert host_lines(proc.stdout, "labhost")["lock directory"].startswith("ok")
    assert ssh_lab.lab.held() == set()


def test_check_host_of_an_unreachable_host(lab: LabFixture, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host deadhost\n  HostName 127.0.0.1\n  Port 1\n")
    env = {**lab.env, "MQ_HOST": "deadhost", "MQ_SSH_CONFIG": str(config)}
    proc = subprocess.run([sys.executable, "-m", "mq", "check", "--host"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == ExitCode.SSH, proc
    assert host_lines(proc.stdout, "deadhost")["reachable"].startswith("FAIL: Unable to ssh to deadhost: ")
