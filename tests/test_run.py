"""``mq run`` end to end: real ``mq`` processes, the board simulator as console, a real sshd.

Every board of the test inventory boots ``mq.engine.host.simboard`` (or a probe
that prints its argv) and powers off by touching a marker file, so each test
can check what a job left behind: no lock, no waiting ticket, no console
process, no uploaded image, and a power-off that happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

import conftest
from conftest import LAB_TOML, PROMPT, LabFixture, SshLab, events, key_of, make_lab, queued, settled, wait_for
from sshd import Sshd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PASS_IMG = EXAMPLES / "sel4test-pass.img"
FAIL_IMG = EXAMPLES / "sel4test-fail.img"
HANG_IMG = EXAMPLES / "sel4test-hang.img"
SHELL_IMG = EXAMPLES / "interactive.img"
SUCCESS = "All is well"
TIMEOUT_MARKER = "[[Timeout]]"  # printed after a -d expiry (the seL4 CI greps run's stdout for it)
MQ = [sys.executable, "-m", "mq"]
BIN = Path(sys.executable).parent
WEIRD = "my kernel $(touch pwned) `touch pwned2`.elf"

PROBE = '''\
import hashlib, json, os, sys
args = sys.argv[1:]
print("ARGV " + json.dumps(args))
for arg in args:
    if os.path.isfile(arg):
        with open(arg, "rb") as handle:
            print("FILE " + json.dumps([arg, hashlib.sha256(handle.read()).hexdigest()]))
print("PROBE-DONE")
'''

EXTRA_TOML = """
[systems.probe]
arch = "probe"
files = 2
pxe_linux = true
dtb = true
boot = "{python} @PROBE@ {system} {file1} {file2} --kernel={file1} {linux} {dtb} {bitstream} {files}"
power_off = "touch @MARKS@/poweroff-{system}"

[systems.badoff]
arch = "none"
boot = "{python} -m mq.engine.host.simboard {system} {files}"
power_off = "false"

[systems.nob]
arch = "none"
boot = "/nonexistent/mq-no-such-boot {system} {files}"
power_off = "touch @MARKS@/poweroff-{system}"

[pools.mixed]
systems = ["b2", "x86a"]
"""


def run_toml(marks: Path, probe: Path) -> str:
    """conftest.LAB_TOML with a boot and power_off for every system, x86b PXE-booting too, plus extras."""
    commands = ('boot = "{python} -m mq.engine.host.simboard {system} {files}"\n'
                'power_off = "touch @MARKS@/poweroff-{system}"\n')
    text = LAB_TOML.replace("dtb = true\n", "dtb = true\npxe_linux = true\n")  # x86b
    text = re.sub(r"^\[systems\.\w+\]\n", lambda m: m.group(0) + commands, text, flags=re.MULTILINE)
    text += EXTRA_TOML
    return text.replace("@MARKS@", str(marks)).replace("@PROBE@", str(probe))


# -- helpers -------------------------------------------------------------------------


def consoles(needle: str, user: str | None = None) -> list[str]:
    """Simulated-board processes whose command line mentions ``needle``."""
    cmd = ["pgrep", "-af", "mq.engine.host.simboard"] if user is None else \
        ["pgrep", "-u", user, "-af", "mq.engine.host.simboard"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if needle in line and "pgrep" not in line]


def jobs_left(home: Path, token: str = "") -> list[str]:
    """Job directories under ``home``; with ``token``, only those holding an image named with it.

    The test users' homes are shared with anything else running as them on this machine,
    so their jobs are told apart by the unique token in the uploaded image names.
    """
    jobs = home / ".cache" / "mq" / "jobs"
    if not jobs.exists():
        return []
    return sorted(p.name for p in jobs.iterdir() if not token or any(token in f.name for f in p.iterdir()))


def write_image(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class RunLab:
    lab: LabFixture
    marks: Path
    home: Path
    cwd: Path
    images: Path
    token: str

    def image(self, name: str) -> Path:
        """A copy of ``examples/NAME.img`` whose name carries this test's token."""
        path = self.images / f"{name}-{self.token}.img"
        if not path.exists():
            shutil.copy(EXAMPLES / f"{name}.img", path)
        return path

    def powered_off(self, board: str) -> bool:
        return (self.marks / f"poweroff-{board}").exists()

    def mq(self, *args: str, cmd: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*(cmd or MQ), *args], env=self.lab.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def mq_ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.mq(*args)
        assert proc.returncode == 0, f"mq {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def assert_clean(self, *boards: str, powered: bool = True) -> None:
        """After a job: nothing held or queued, consoles gone, images deleted, power_off ran."""
        assert self.lab.held() == set()
        assert queued(self.lab) == []
        for board in boards:
            assert self.powered_off(board) is powered, board
        wait_for(lambda: not consoles(f"{self.home}/"), timeout=5, what="console processes to end")
        assert jobs_left(self.home) == []


@dataclass
class Spawned:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def finish(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def spawned() -> Iterator[list[Spawned]]:
    started: list[Spawned] = []
    yield started
    for item in started:
        if item.proc.poll() is None:
            item.proc.kill()
        item.proc.wait(timeout=10)


def spawn(env: dict[str, str], cwd: Path, started: list[Spawned], name: str, *args: str) -> Spawned:
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([*MQ, *args], env=env, cwd=cwd, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL)
    item = Spawned(proc, out, err)
    started.append(item)
    return item


def pty(rl: RunLab, children: list[pexpect.spawn], *args: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "mq", *args], env=env or rl.lab.env, cwd=str(rl.cwd),
                          encoding="utf-8", timeout=30, dimensions=(24, 200))
    children.append(child)
    return child


def pty_end(child: pexpect.spawn, timeout: float = 30) -> tuple[str, int | None]:
    child.expect(pexpect.EOF, timeout=timeout)
    output = child.before or ""
    child.close()
    return output, child.exitstatus


def prepare(base_lab: LabFixture, marks: Path, home: Path, cwd: Path) -> RunLab:
    marks.mkdir(parents=True, exist_ok=True)
    probe = cwd / "probe.py"
    probe.write_text(PROBE)
    base_lab.inventory.write_text(run_toml(marks, probe))
    images = cwd / "images"
    images.mkdir(exist_ok=True)
    write_image(images / "slow.img", "print Starting slow test", "sleep 3", "print Test suite passed.", "pass")
    write_image(images / "second.img", "# the second image of an x86 system (root task)")
    write_image(images / "board.dtb", "# a device tree blob")
    token = f"t{os.getpid()}x{time.monotonic_ns()}"
    return RunLab(lab=base_lab, marks=marks, home=home, cwd=cwd, images=images, token=token)


@pytest.fixture
def rl(tmp_path: Path, isolated_env: Path) -> RunLab:
    """A private local lab whose boards boot the simulator; power-off markers in ``marks``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return prepare(make_lab(tmp_path / "lab"), tmp_path / "marks", isolated_env, cwd)


# -- 1. outcomes and cleanup ----------------------------------------------------------
def test_success_streams_console_to_stdout_and_log(rl: RunLab) -> None:
    log = rl.cwd / "console.log"
    proc = subprocess.run([*MQ, "run", "-s", "b1", "-c", SUCCESS, "-f", str(PASS_IMG), "-l", str(log)],
                          env=rl.lab.env, cwd=rl.cwd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert b"Test suite passed. 20 tests passed." in proc.stdout
    assert SUCCESS.encode() in proc.stdout
    assert proc.stdout == log.read_bytes()
    assert b"mq: running on b1" in proc.stderr
    assert b"mq: running" not in proc.stdout  # messages never mix into the console stream
    assert TIMEOUT_MARKER.encode() not in proc.stdout  # only a -d expiry prints it
    rl.assert_clean("b1")
    assert [e["reason"] for e in events(rl.lab, "release")] == ["run ended"]


@pytest.mark.parametrize(("args", "board", "code", "console"), [
    (["-e", "FAILED", "-f", str(FAIL_IMG)], "b1", 11, "SIMULATED0002 ... FAILED"),
    (["-d", "1", "-f", str(HANG_IMG)], "b2", 12, "Running test SIMULATED0001 ..."),
    (["-f", str(FAIL_IMG)], "solo", 13, "Test failed: simulated failure"),
    (["-f", str(PASS_IMG)], "nob", 14, ""),
], ids=["error-text", "timeout", "console-ended", "boot-missing"])
def test_failure_outcomes(rl: RunLab, args: list[str], board: str, code: int, console: str) -> None:
    log = rl.cwd / "console.log"
    started = time.monotonic()
    proc = rl.mq("run", "-s", board, "-c", SUCCESS, "-l", str(log), *args)
    assert proc.returncode == code, proc.stderr
    assert console in proc.stdout
    assert SUCCESS not in proc.stdout
    assert proc.stdout == log.read_text()  # the log mirrors stdout, marker included
    if code == 12:
        assert 1.0 <= time.monotonic() - started < 15
        # the line the seL4 CI looks for: once, last, right after the console's last line
        lines = proc.stdout.splitlines()
        assert lines[-2:] == [console, TIMEOUT_MARKER]
        assert lines.count(TIMEOUT_MARKER) == 1
        assert proc.stdout.endswith(TIMEOUT_MARKER + "\n")
        assert TIMEOUT_MARKER not in proc.stderr
        assert "timed out (-d) before the completion text" in proc.stderr
    else:
        assert TIMEOUT_MARKER not in proc.stdout + proc.stderr
    if code == 14:
        assert "/nonexistent/mq-no-such-boot" in proc.stderr
    rl.assert_clean(board)
    assert len(events(rl.lab, "grant")) == 1
    assert len(events(rl.lab, "release")) == 1


def test_timeout_marker_after_a_prompt_without_newline(rl: RunLab) -> None:
    """A console whose last output is an unfinished line (a prompt): the marker still gets a line of its own."""
    prompt = rl.cwd / "prompt.py"  # a console that prints a prompt and hangs
    prompt.write_text("import sys, time\nsys.stdout.write('board login: ')\nsys.stdout.flush()\ntime.sleep(600)\n")
    toml = rl.lab.inventory
    toml.write_text(toml.read_text() + textwrap.dedent(f"""
        [systems.prompt]
        arch = "none"
        boot = "{{python}} {prompt} {{files}}"
        power_off = "touch {rl.marks}/poweroff-{{system}}"
        """))
    log = rl.cwd / "console.log"
    proc = rl.mq("run", "-s", "prompt", "-c", SUCCESS, "-d", "1", "-l", str(log), "-f", str(PASS_IMG))
    assert proc.returncode == 12, proc.stderr
    assert proc.stdout == "board login: \n" + TIMEOUT_MARKER + "\n"
    assert log.read_text() == proc.stdout
    assert rl.lab.held() == set()
    assert rl.powered_off("prompt")


def test_boot_template_placeholders_are_whole_arguments_never_run(rl: RunLab) -> None:
    kernel = rl.images / WEIRD
    kernel.write_text("kernel bytes $(touch pwned)\n")
    root = rl.images / "root task; touch pwned3.elf"
    root.write_text("root task bytes\n")
    dtb, bitstream = rl.images / "board $(id).dtb", rl.images / "fpga bits.bit"
    dtb.write_text("dtb bytes\n")
    bitstream.write_text("bitstream bytes\n")
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (kernel, root, dtb, bitstream)}

    def argv_of(stdout: str) -> tuple[list[str], dict[str, str]]:
        lines = stdout.splitlines()
        argv = json.loads(next(line for line in lines if line.startswith("ARGV "))[5:])
        files = dict(json.loads(line[5:]) for line in lines if line.startswith("FILE "))
        return argv, files

    proc = rl.mq("run", "-s", "probe", "-c", "PROBE-DONE", "-L", "-b", str(dtb), "--bitstream", str(bitstream),
                 "-f", str(kernel), "-f", str(root))
    assert proc.returncode == 0, proc.stderr
    argv, files = argv_of(proc.stdout)
    assert len(argv) == 9, argv
    system, file1, file2, kernel_opt, linux, dtb_arg, bits_arg, all1, all2 = argv
    assert (system, kernel_opt, linux, all1, all2) == ("probe", f"--kernel={file1}", "-L", file1, file2)
    jobs = str(rl.home / ".cache" / "mq" / "jobs") + "/"
    for arg, source in ((file1, kernel), (file2, root), (dtb_arg, dtb), (bits_arg, bitstream)):
        assert arg.startswith(jobs), arg  # the host copy, one argument, spaces and all
        assert files[arg] == sha[source]

    proc = rl.mq("run", "-s", "probe", "-c", "PROBE-DONE", "-f", str(kernel), "-f", str(root))
    assert proc.returncode == 0, proc.stderr
    argv, files = argv_of(proc.stdout)
    assert len(argv) == 6, argv  # {linux}, {dtb}, {bitstream} empty: the arguments are dropped
    assert argv[0] == "probe" and argv[3] == f"--kernel={argv[1]}" and argv[4:] == argv[1:3]
    assert [files[a] for a in argv[1:3]] == [sha[kernel], sha[root]]

    for where in (rl.cwd, rl.home, rl.images.parent, rl.lab.base, Path.cwd()):
        assert not [p for p in where.rglob("pwned*")], where
    rl.assert_clean("probe")


# -- 2. checks before locking ------------------------------------------------------------
@pytest.mark.parametrize(("target", "args", "code", "message"), [
    ("b1", ["-c", "x", "-f", "@pass", "-f", "@second"], 5, "b1 takes 1 image file(s) (-f), 2 given"),
    ("x86a", ["-c", "x", "-f", "@pass"], 5, "x86a takes 2 image file(s) (-f), 1 given"),
    ("b1", ["-c", "x"], 5, "b1 takes 1 image file(s) (-f), 0 given"),
    ("b1", ["-c", "x", "-L", "-f", "@pass"], 5, "b1 does not PXE-boot Linux (-L)"),
    ("x86b", ["-c", "x", "-b", "@dtb", "-f", "@pass", "-f", "@second"], 5, "-b DTB is only accepted together with -L"),
    ("x86a", ["-c", "x", "-L", "-b", "@dtb", "-f", "@pass", "-f", "@second"], 5,
     "x86a does not accept a DTB (-b)"),
    ("b1", ["-c", "x", "-f", "@missing"], 5, "no such file"),
    ("b1", ["-c", "x", "-f", "@dir"], 5, "is a directory"),
    ("x86b", ["-c", "x", "-L", "-b", "@missing", "-f", "@pass", "-f", "@second"], 5, "no such file"),
    ("b1", ["-f", "@pass"], 64, "-c TEXT"),
    ("trio", ["-c", "x", "-f", "@pass", "-f", "@second"], 5, "takes 1 image file(s)"),
    ("nosuch", ["-c", "x", "-f", "@pass"], 1, "Unknown system or pool 'nosuch'"),
], ids=["too-many", "too-few", "none", "L-no-pxe", "b-without-L", "b-no-dtb", "missing", "directory",
        "missing-dtb", "no-c-no-r", "pool-none-suits", "unknown"])
def test_checks_before_locking(rl: RunLab, target: str, args: list[str], code: int, message: str) -> None:
    paths = {"@pass": str(PASS_IMG), "@second": str(rl.images / "second.img"), "@dtb": str(rl.images / "board.dtb"),
             "@missing": str(rl.images / "missing.img"), "@dir": str(rl.images)}
    proc = rl.mq("run", "-s", target, *[paths.get(a, a) for a in args])
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert proc.stdout == ""
    assert rl.lab.held() == set()
    assert events(rl.lab, "grant") == []
    assert queued(rl.lab) == []
    assert jobs_left(rl.home) == []  # nothing uploaded
    assert list(rl.marks.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["-c", "(unclosed"], "-c '(unclosed' is not a valid regular expression"),
    (["-c", SUCCESS, "-e", "[z-a]"], "-e '[z-a]' is not a valid regular expression"),
    (["-c", SUCCESS, "-l", "/nonexistent/mq-dir/console.log"], "/nonexistent/mq-dir/console.log"),
], ids=["bad-c", "bad-e", "log-unwritable"])
def test_bad_patterns_and_log_refused_before_locking(rl: RunLab, args: list[str], message: str) -> None:
    proc = rl.mq("run", "-s", "b1", *args, "-f", str(PASS_IMG))
    assert proc.returncode == 5, proc.stderr
    assert message in proc.stderr
    assert "unexpected error" not in proc.stderr
    assert proc.stdout == ""
    assert rl.lab.held() == set()
    assert events(rl.lab, "grant") == []
    assert jobs_left(rl.home) == []
    assert not rl.powered_off("b1")


def test_broken_pipe_stops_the_job(rl: RunLab) -> None:
    """stdout closed by the reader (``mq run ... | head -3``): the job stops and cleans up, exit 141."""
    reader = subprocess.Popen(["head", "-3"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    proc = subprocess.run([*MQ, "run", "-s", "b1", "-c", SUCCESS, "-f", str(HANG_IMG)], env=rl.lab.env, cwd=rl.cwd,
                          stdout=reader.stdin, stderr=subprocess.PIPE, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    reader.stdin.close()
    reader.wait(timeout=10)
    assert proc.returncode != 0, proc.stderr
    rl.assert_clean("b1")
    assert proc.returncode == 141, proc.stderr  # 128 + SIGPIPE, as main() intends (1 means "unknown system")


def test_unreadable_file_refused_before_locking(shared_lab: LabFixture, test_users: tuple[str, ...],
                                                tmp_path: Path) -> None:
    user = test_users[0]
    root = shared_lab.base.parent
    cwd = root / "cwd"
    cwd.mkdir(mode=0o777)
    os.chmod(cwd, 0o777)
    marks = root / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    rl = prepare(shared_lab, marks, Path(f"/tmp/mq-home-{user}"), cwd)
    os.chmod(rl.lab.inventory, 0o644)
    os.chmod(cwd / "probe.py", 0o644)
    secret = root / f"secret-{rl.token}.img"
    secret.write_text("print nobody may read this\npass\n")
    os.chmod(secret, 0o600)  # root's file: the test user cannot read it
    proc = conftest.run_mq(shared_lab, "run", "-s", "b1", "-c", "x", "-f", str(secret), user=user, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert "not readable" in proc.stderr
    assert shared_lab.held() == set()
    assert events(shared_lab, "grant") == []
    assert jobs_left(rl.home, rl.token) == []
    # the same user with a readable image runs (the refusal was about the file)
    readable = rl.image("sel4test-pass")
    os.chmod(rl.images, 0o755)
    ok = conftest.run_mq(shared_lab, "run", "-s", "b1", "-c", SUCCESS, "-f", str(readable), user=user, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert shared_lab.held() == set()
    assert rl.powered_off("b1")
    assert jobs_left(rl.home, rl.token) == []
    assert consoles(rl.token, user=user) == []


def test_pool_uses_only_suitable_members(rl: RunLab) -> None:
    second = str(rl.images / "second.img")
    one = rl.mq("run", "-s", "mixed", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert one.returncode == 0, one.stderr
    assert "mq: running on b2" in one.stderr
    two = rl.mq("run", "-s", "mixed", "-c", SUCCESS, "-f", str(PASS_IMG), "-f", second)
    assert two.returncode == 0, two.stderr
    assert "mq: running on x86a" in two.stderr  # b2 is first and free, but takes one image
    linux = rl.mq("run", "-s", "x86", "-L", "-b", str(rl.images / "board.dtb"), "-c", SUCCESS,
                  "-f", str(PASS_IMG), "-f", second)
    assert linux.returncode == 0, linux.stderr
    assert "mq: running on x86b" in linux.stderr  # x86a takes no DTB
    rl.assert_clean("b2", "x86a", "x86b")
    assert [e["board"] for e in events(rl.lab, "grant")] == ["b2", "x86a", "x86b"]

    # the suitable member is held: the free unsuitable one is never taken
    rl.mq_ok("sem", "-wait", "x86a", "-k", "H")
    blocked = rl.mq("run", "-s", "mixed", "-k", "R", "-c", SUCCESS, "-f", str(PASS_IMG), "-f", second, "-t", "0")
    assert blocked.returncode == 2, blocked.stderr
    assert rl.lab.held() == {"x86a"}
    assert [e["board"] for e in events(rl.lab, "grant")] == ["b2", "x86a", "x86b", "x86a"]
    assert jobs_left(rl.home) == []
    rl.mq_ok("sem", "-signal", "x86a", "-k", "H")


# -- 3. pools --------------------------------------------------------------------------
def test_pool_run_names_the_board(rl: RunLab) -> None:
    proc = rl.mq("run", "-s", "trio", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^mq: running on b[123]$", proc.stderr, re.MULTILINE), proc.stderr
    assert "(mq simulated board b1)" in proc.stdout
    rl.assert_clean("b1")


def test_concurrent_pool_runs_get_different_boards(rl: RunLab, spawned: list[Spawned]) -> None:
    go = rl.cwd / "go"  # both tests run until the test has seen both boards held
    held = str(write_image(rl.images / "held.img", "print Starting", f"wait {go}", "print Test suite passed.", "pass"))
    first = spawn(rl.lab.env, rl.cwd, spawned, "first", "run", "-s", "trio", "-k", "A", "-c", SUCCESS, "-f", held)
    wait_for(lambda: rl.lab.held() or first.proc.poll() is not None, what="the first run's board")
    second = spawn(rl.lab.env, rl.cwd, spawned, "second", "run", "-s", "trio", "-k", "B", "-c", SUCCESS, "-f", held)
    wait_for(lambda: len(rl.lab.held()) == 2 or second.proc.poll() is not None, what="both runs' boards")
    go.touch()
    assert (first.finish(), second.finish()) == (0, 0), first.stderr() + second.stderr()
    boards = [re.search(r"mq: running on (b\d)", s.stderr()) for s in (first, second)]
    assert all(boards), [s.stderr() for s in (first, second)]
    names = [m.group(1) for m in boards if m]
    assert names[0] != names[1]
    grants = events(rl.lab, "grant")
    releases = events(rl.lab, "release")
    assert len(grants) == 2 and len(releases) == 2
    assert grants[1]["time"] < releases[0]["time"]  # they really ran at the same time
    rl.assert_clean(*names)


def test_run_waits_fairly_behind_sem_holders(rl: RunLab, spawned: list[Spawned]) -> None:
    for board in ("b1", "b2", "b3"):
        rl.mq_ok("sem", "-wait", board, "-k", "H")
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "trio", "-k", "R", "-c", SUCCESS,
                "-f", str(PASS_IMG))
    wait_for(lambda: len(queued(rl.lab)) == 1 or run.proc.poll() is not None, what="the run's ticket")
    later = spawn(rl.lab.env, rl.cwd, spawned, "later", "sem", "-wait", "trio", "-k", "W")
    wait_for(lambda: len(queued(rl.lab)) == 2 or later.proc.poll() is not None, what="the later ticket")
    time.sleep(0.3)  # negative check: neither wait may end while every board is held
    assert run.proc.poll() is None and later.proc.poll() is None
    assert not rl.powered_off("b2") and "Booting" not in run.stdout()

    rl.mq_ok("sem", "-signal", "b2", "-k", "H")
    assert run.finish() == 0, run.stderr()
    assert "mq: running on b2" in run.stderr()
    assert SUCCESS in run.stdout()
    assert later.finish() == 0, later.stderr()
    assert later.stdout().splitlines()[-1] == "b2"
    assert [(e["board"], e["key"]) for e in events(rl.lab, "grant")][-2:] == [("b2", "R"), ("b2", "W")]
    assert rl.powered_off("b2")
    for board, key in (("b1", "H"), ("b2", "W"), ("b3", "H")):
        rl.mq_ok("sem", "-signal", board, "-k", key)
    rl.assert_clean("b2")


# -- 4. -n: the caller already holds the lock ------------------------------------------
def test_held_run_needs_the_lock(rl: RunLab) -> None:
    proc = rl.mq("run", "-n", "-s", "b1", "-k", "K", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 3, proc.stderr
    assert "b1" in proc.stderr
    assert proc.stdout == ""
    assert rl.lab.held() == set()
    assert events(rl.lab, "grant") == []
    assert jobs_left(rl.home) == []


def test_held_run_keeps_the_lock(rl: RunLab) -> None:
    rl.mq_ok("sem", "-wait", "b1", "-k", "K")
    proc = rl.mq("run", "-n", "-s", "b1", "-k", "K", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    assert "mq: running on b1 (already held by you)" in proc.stderr
    assert SUCCESS in proc.stdout
    assert rl.lab.held() == {"b1"}
    assert key_of(rl.lab, "b1") == "K"
    assert events(rl.lab, "release") == []
    assert rl.powered_off("b1")  # -n keeps the lock, not the board's power
    wrong = rl.mq("run", "-n", "-s", "b1", "-k", "other", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert wrong.returncode == 3, wrong.stderr
    assert wrong.stdout == ""
    assert key_of(rl.lab, "b1") == "K"
    rl.mq_ok("sem", "-signal", "b1", "-k", "K")
    assert rl.lab.held() == set()
    wait_for(lambda: not consoles(f"{rl.home}/"), timeout=5, what="console processes to end")
    assert jobs_left(rl.home) == []


def test_held_run_on_pool_uses_first_member_held_with_key(rl: RunLab) -> None:
    rl.mq_ok("sem", "-wait", "b1", "-k", "other")
    rl.mq_ok("sem", "-wait", "b2", "-k", "K")
    rl.mq_ok("sem", "-wait", "b3", "-k", "K")
    proc = rl.mq("run", "-n", "-s", "trio", "-k", "K", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    assert "mq: running on b2 (already held by you)" in proc.stderr
    assert "(mq simulated board b2)" in proc.stdout
    assert rl.lab.held() == {"b1", "b2", "b3"}
    assert [key_of(rl.lab, b) for b in ("b1", "b2", "b3")] == ["other", "K", "K"]
    rl.mq_ok("sem", "-signal", "trio", "-k", "K")
    rl.mq_ok("sem", "-signal", "b1", "-k", "other")


def test_held_run_on_pool_skips_unsuitable_members(rl: RunLab) -> None:
    """-n on a pool: the first member held with the key *that suits the job* (as without -n)."""
    second = str(rl.images / "second.img")
    rl.mq_ok("sem", "-wait", "b2", "-k", "K")  # held, first in the pool, but takes one image
    refused = rl.mq("run", "-n", "-s", "mixed", "-k", "K", "-c", SUCCESS, "-f", str(PASS_IMG), "-f", second)
    assert refused.returncode == 3, refused.stderr
    assert "mq: running on b2" not in refused.stderr
    rl.mq_ok("sem", "-wait", "x86a", "-k", "K")
    proc = rl.mq("run", "-n", "-s", "mixed", "-k", "K", "-c", SUCCESS, "-f", str(PASS_IMG), "-f", second)
    assert proc.returncode == 0, proc.stderr
    assert "mq: running on x86a (already held by you)" in proc.stderr
    assert rl.lab.held() == {"b2", "x86a"}
    rl.mq_ok("sem", "-signal", "mixed", "-k", "K")


# -- 5. on a terminal: -r, -a, Ctrl+C ---------------------------------------------------------
@pytest.mark.parametrize("how", ["enter", "ctrl-d"])
def test_reserve_until_enter_or_ctrl_d(rl: RunLab, children: list[pexpect.spawn], how: str) -> None:
    child = pty(rl, children, "run", "-s", "b1", "-r")
    child.expect("mq: b1 is yours")
    child.expect("Enter or Ctrl\\+D")
    assert rl.lab.held() == {"b1"}
    assert rl.lab.key("b1").read_text() == "reservation\n"  # -info shows what holds the board
    time.sleep(0.2)  # negative check: a reservation does not power the board off by itself
    assert not rl.powered_off("b1")
    if how == "enter":
        child.sendline("")
    else:
        child.sendeof()
    _, status = pty_end(child)
    assert status == 0
    rl.assert_clean("b1")


def big_image(path: Path) -> Path:
    """An image of 5 MiB (over the progress bar's 4 MiB) that passes (the simulator reads its first MiB)."""
    return write_image(path, "pass", *(["# padding " + "x" * 1000] * 5 * 1024))


def test_a_big_upload_shows_its_progress_on_a_terminal(rl: RunLab, children: list[pexpect.spawn]) -> None:
    child = pty(rl, children, "run", "-s", "b1", "-f", str(big_image(rl.cwd / "big.img")), "-c", SUCCESS)
    child.expect("uploading images")
    output, status = pty_end(child)
    assert status == 0 and SUCCESS in output, output


def test_reserve_on_pool(rl: RunLab, children: list[pexpect.spawn]) -> None:
    first = pty(rl, children, "run", "-s", "trio", "-r", "-k", "A")
    first.expect(r"mq: (b\d) is yours")
    board1 = first.match.group(1)
    second = pty(rl, children, "run", "-s", "trio", "-r", "-k", "B")
    second.expect(r"mq: (b\d) is yours")
    board2 = second.match.group(1)
    assert board1 != board2
    assert rl.lab.held() == {board1, board2}
    second.sendline("")
    assert pty_end(second)[1] == 0
    assert rl.lab.held() == {board1}
    first.sendeof()
    assert pty_end(first)[1] == 0
    rl.assert_clean(board1, board2)


@pytest.mark.parametrize("end", ["\x1d", "\x04"], ids=["ctrl-]", "ctrl-d"])
def test_interactive_console(rl: RunLab, children: list[pexpect.spawn], end: str) -> None:
    log = rl.cwd / "shell.log"
    child = pty(rl, children, "run", "-s", "b1", "-c", "shell>", "-a", "-f", str(SHELL_IMG), "-l", str(log))
    child.expect("Welcome to the simulated shell")
    child.expect("console is interactive now")
    child.send("hello-from-the-test\n")
    child.expect("hello-from-the-test")
    wait_for(lambda: "hello-from-the-test" in log.read_text(), timeout=10, what="the board's echo in the log")
    assert rl.lab.held() == {"b1"}
    child.send(end)
    _, status = pty_end(child)
    assert status == 0
    text = log.read_text()
    assert text.count("hello-from-the-test") == 1  # echoed by the board once, not by the terminal
    rl.assert_clean("b1")


def test_ctrl_c_while_waiting_for_the_lock(rl: RunLab, children: list[pexpect.spawn]) -> None:
    rl.mq_ok("sem", "-wait", "b1", "-k", "H")
    child = pty(rl, children, "run", "-s", "b1", "-k", "R", "-c", SUCCESS, "-f", str(PASS_IMG))
    wait_for(lambda: len(queued(rl.lab)) == 1 or not child.isalive(), what="the run's ticket")
    child.sendintr()
    _, status = pty_end(child, timeout=10)
    assert status == 130
    assert rl.lab.held() == {"b1"}
    assert key_of(rl.lab, "b1") == "H"
    assert queued(rl.lab) == []
    assert not rl.powered_off("b1")  # nothing was taken, nothing powered off
    assert jobs_left(rl.home) == []
    assert consoles(f"{rl.home}/") == []
    rl.mq_ok("sem", "-signal", "b1", "-k", "H")


@pytest.mark.parametrize("phase", ["console", "reserve", "interactive"])
def test_ctrl_c_during_a_job(rl: RunLab, children: list[pexpect.spawn], phase: str) -> None:
    if phase == "console":
        child = pty(rl, children, "run", "-s", "b1", "-c", SUCCESS, "-f", str(HANG_IMG))
        child.expect("Running test SIMULATED0001")
        assert consoles(f"{rl.home}/")
    elif phase == "reserve":
        child = pty(rl, children, "run", "-s", "b1", "-r")
        child.expect("b1 is yours")
    else:
        child = pty(rl, children, "run", "-s", "b1", "-c", "shell>", "-a", "-f", str(SHELL_IMG))
        child.expect("console is interactive now")
        child.send("typed\n")
        child.expect("typed")
    assert rl.lab.held() == {"b1"}
    started = time.monotonic()
    child.sendintr()
    output, status = pty_end(child, timeout=15)
    assert status == 130
    assert TIMEOUT_MARKER not in output
    assert time.monotonic() - started < 8
    rl.assert_clean("b1")
    assert [e["board"] for e in events(rl.lab, "release")] == ["b1"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_term_and_hup_during_a_job(rl: RunLab, spawned: list[Spawned], signum: int) -> None:
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS, "-f", str(HANG_IMG),
                "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    run.proc.send_signal(signum)
    assert run.finish(timeout=15) == 128 + signum, run.stderr()
    rl.assert_clean("b1")


def test_power_off_failure_is_a_warning(rl: RunLab) -> None:
    proc = rl.mq("run", "-s", "badoff", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    assert "mq: warning: power_off exited 1" in proc.stderr
    assert rl.lab.held() == set()
    assert jobs_left(rl.home) == []


# -- end of input, odd values, log write errors ----------------------------------------------
def test_reserve_with_closed_stdin_on_a_busy_board_ends_after_the_grant(rl: RunLab, spawned: list[Spawned]) -> None:
    """The end of input comes while waiting for the board; it still ends the reservation."""
    rl.mq_ok("sem", "-wait", "b1", "-k", "hold")
    run = spawn(rl.lab.env, rl.cwd, spawned, "reserve", "run", "-s", "b1", "-r", "-k", "me")  # stdin: /dev/null
    wait_for(lambda: len(queued(rl.lab)) == 1, what="the reservation to queue")
    rl.mq_ok("sem", "-signal", "b1", "-k", "hold")
    assert run.finish(timeout=15) == 0, run.stderr()
    assert "b1 is yours" in run.stderr()
    rl.assert_clean("b1")


def test_a_run_that_waits_says_where_it_stands(rl: RunLab, spawned: list[Spawned]) -> None:
    """Not on a terminal: one plain line when its wait starts (then the console, on stdout only)."""
    rl.mq_ok("sem", "-wait", "b1", "-k", "hold", "-T", "600")
    run = spawn(rl.lab.env, rl.cwd, spawned, "waits", "run", "-s", "b1", "-k", "job", "-c", SUCCESS,
                "-f", str(PASS_IMG))
    wait_for(lambda: "mq: waiting: " in run.stderr() or run.proc.poll() is not None, what="the waiting line")
    assert len(queued(rl.lab)) == 1, run.stderr()
    rl.mq_ok("sem", "-signal", "b1", "-k", "hold")
    assert run.finish(timeout=20) == 0, run.stderr()
    lines = run.stderr().splitlines()
    assert lines[0].startswith("mq: waiting: position 1 of 1 for b1; b1 held by ")
    assert "(-T 600, " in lines[0] and "ETA " in lines[0]
    assert lines[1].startswith("mq: running on b1")
    rl.assert_clean("b1")


def test_interactive_with_closed_stdin_ends_after_the_match(rl: RunLab) -> None:
    proc = rl.mq("run", "-s", "b1", "-c", "shell>", "-a", "-f", str(rl.image("interactive")), timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert "console is interactive now" in proc.stderr
    assert "mq: \n" not in proc.stderr and "mq: \r" not in proc.stderr, proc.stderr  # no empty mq: line
    rl.assert_clean("b1")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-n", "-r", "-k", "K"], 64, "do not go together"),
    (["-c", SUCCESS, "-d", "nan", "-f", "@pass"], 5, "-d nan: must be a number of seconds"),
    (["-c", SUCCESS, "-d", "1e10", "-f", "@pass"], 5, "-d 1e+10: must be a number of seconds up to 999999999"),
    (["-c", SUCCESS, "-d", "-5", "-f", "@pass"], 5, "-d -5: must be a number of seconds up to 999999999 "
                                                    "(-1 or inf: no time limit)"),
    (["-c", SUCCESS, "-w", "nan", "-f", "@pass"], 5, "-w nan: the retry period must be"),
    (["-c", SUCCESS, "-t", "99999999999999999999", "-f", "@pass"], 5, "out of range"),
    (["-c", SUCCESS, "-l", "/dev/full", "-f", "@pass"], 8, "writing the log failed"),
], ids=["n-and-r", "d-nan", "d-huge", "d-negative", "w-nan", "t-huge", "log-disk-full"])
def test_bad_values_one_line_and_nothing_held(rl: RunLab, args: list[str], code: int, message: str) -> None:
    proc = rl.mq("run", "-s", "b1", *[str(PASS_IMG) if a == "@pass" else a for a in args])
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if not line.startswith("mq: running on")]) == 1
    assert rl.lab.held() == set()
    assert jobs_left(rl.home) == []


@pytest.mark.parametrize("deadline", ["inf", "999999999", "-1", "10m", "1h30m"])
def test_huge_deadline_means_none(rl: RunLab, deadline: str) -> None:
    proc = rl.mq("run", "-s", "b1", "-c", SUCCESS, "-d", deadline, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    rl.assert_clean("b1")


@pytest.mark.parametrize(("image", "outcome", "code"), [("sel4test-pass", "completed", 0),
                                                         ("sel4test-fail", "error", 11)])
def test_json_summary_on_stdout_console_on_stderr(rl: RunLab, image: str, outcome: str, code: int) -> None:
    log = rl.cwd / "console.log"
    proc = rl.mq("run", "-s", "trio", "-c", SUCCESS, "-e", "FAILED", "-l", str(log), "--json",
                 "-f", str(rl.image(image)))
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is the one summary line, nothing else
    assert (doc["mq"], doc["kind"]) == (1, "run")
    data = doc["data"]
    assert set(data) == {"board", "target", "result", "exit_code", "duration", "log", "powered_off", "taken_by",
                         "lost_why", "notes"}
    assert (data["target"], data["result"], data["exit_code"], data["log"]) == ("trio", outcome, code, str(log))
    assert data["board"] in ("b1", "b2", "b3") and data["powered_off"] is True and data["taken_by"] is None
    assert data["lost_why"] is None
    assert 0 < data["duration"] < 60
    assert log.read_text() in proc.stderr  # the console went to stderr (and to the log)
    rl.assert_clean(data["board"])


def test_reserve_warns_about_ignored_options(rl: RunLab) -> None:
    proc = rl.mq("run", "-s", "b1", "-r", "-c", SUCCESS, "-f", str(PASS_IMG))
    assert proc.returncode == 0, proc.stderr
    assert "-c, -e, -f and -a are ignored" in proc.stderr
    rl.assert_clean("b1")


# -- 6. kill -9 of a local client ------------------------------------------------------------
def local_engines(rl: RunLab) -> list[int]:
    """The job engine processes a local ``mq run`` of this lab started."""
    out = subprocess.run(["pgrep", "-af", "mq.engine.host.agent"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if str(rl.lab.base) in line]


def test_kill9_local_client_cleans_up_at_once(rl: RunLab, spawned: list[Spawned]) -> None:
    """Fault case 5 without SSH: the job's engine sees its client vanish and cleans up
    (console stopped, board powered off, images deleted, lock released, audited)."""
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS, "-f", str(HANG_IMG),
                "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    assert consoles(f"{rl.home}/") and local_engines(rl)
    run.proc.kill()
    run.proc.wait(timeout=10)
    wait_for(lambda: rl.lab.held() == set(), timeout=5, what="the lock released")
    rl.assert_clean("b1")
    wait_for(lambda: not local_engines(rl), timeout=5, what="the job engine to end")
    assert str(events(rl.lab, "release")[-1]["reason"]).startswith("client gone")


@pytest.mark.parametrize("key", [[], ["-k", "next"]], ids=["same-user-no-key", "same-user-other-key"])
def test_dead_session_lock_is_reclaimed(rl: RunLab, spawned: list[Spawned], key: list[str]) -> None:
    """Fault case 7: the job's engine itself killed (-9): its console dies with it, the lock
    stays, bound to a dead session, and the next waiter reclaims it (audited)."""
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS, "-f", str(HANG_IMG),
                "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    for pid in local_engines(rl):
        os.kill(pid, signal.SIGKILL)
    assert run.finish(timeout=10) == 10
    wait_for(lambda: not consoles(f"{rl.home}/"), timeout=5, what="the console to die with its job (PDEATHSIG)")
    assert rl.lab.held() == {"b1"}
    info = rl.mq_ok("sem", "-info", "b1").stdout
    assert "session is gone" in info, info
    started = time.monotonic()
    # the dead run held b1 with no key: a new wait by the same user (no key, or another) is not a re-take
    proc = rl.mq("sem", "-wait", "b1", *key, "-w", "1", "-t", "5")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 5
    assert key_of(rl.lab, "b1") == (key[1] if key else "0")
    reclaims = events(rl.lab, "reclaim")
    assert [(e["reason"], e["board"]) for e in reclaims] == [("dead-session", "b1")]
    rl.mq_ok("sem", "-signal", "b1", *key)
    assert rl.lab.held() == set()


# -- 7. over SSH ------------------------------------------------------------------------------
@dataclass
class SshRunLab:
    rl: RunLab
    ssh: SshLab
    user: str = "mqalice"

    @property
    def sshd(self) -> Sshd:
        return self.ssh.sshd

    def env(self) -> dict[str, str]:
        return self.ssh.env(self.user)

    def mq(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MQ, *args], env=self.env(), cwd=self.rl.cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    @property
    def host_home(self) -> Path:
        return Path(f"/tmp/mq-home-{self.user}")

    def assert_host_clean(self, board: str, timeout: float = 10) -> None:
        lab = self.rl.lab
        wait_for(lambda: lab.held() == set(), timeout=timeout, what="the lock released on the host")
        token = self.rl.token
        wait_for(lambda: not consoles(token, user=self.user), timeout=timeout, what="the host console gone")
        wait_for(lambda: jobs_left(self.host_home, token) == [], timeout=timeout, what="uploaded images deleted")
        assert self.rl.powered_off(board)
        assert queued(lab) == []
        releases = [e for e in events(lab, "release") if e["board"] == board]
        assert releases and releases[-1]["outcome"] == "released"
        assert releases[-1]["user"] == self.user


@pytest.fixture
def ssh_rl(ssh_lab: SshLab, tmp_path: Path, isolated_env: Path) -> Iterator[SshRunLab]:
    """``rl``'s lab and boards on the sshd's host (``ssh_lab`` kills its host agents and removes it after)."""
    marks = ssh_lab.sshd.root / f"marks-{tmp_path.name}"
    marks.mkdir()
    os.chmod(marks, 0o777)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rl = prepare(ssh_lab.lab, marks, isolated_env, cwd)
    os.chmod(ssh_lab.lab.inventory, 0o644)
    yield SshRunLab(rl=rl, ssh=ssh_lab)
    ssh_lab.kill_host_side()  # before its uploads are swept
    shutil.rmtree(marks, ignore_errors=True)
    jobs = Path(f"/tmp/mq-home-{SshRunLab.user}") / ".cache" / "mq" / "jobs"
    for name in jobs_left(jobs.parent.parent.parent, rl.token):  # only what this test uploaded (if a test failed)
        shutil.rmtree(jobs / name, ignore_errors=True)


def test_ssh_run_success_one_connection(ssh_rl: SshRunLab) -> None:
    image = ssh_rl.rl.images / f"{ssh_rl.rl.token} {WEIRD}"
    shutil.copy(PASS_IMG, image)
    log = ssh_rl.rl.cwd / "console.log"
    before = ssh_rl.sshd.accepted()
    proc = ssh_rl.mq("run", "-s", "trio", "-c", SUCCESS, "-f", str(image), "-l", str(log))
    assert proc.returncode == 0, proc.stderr
    assert ssh_rl.sshd.accepted() - before == 1
    assert "mq: running on b1" in proc.stderr
    assert "Test suite passed" in proc.stdout
    assert proc.stdout == log.read_text()
    ssh_rl.assert_host_clean("b1", timeout=5)
    assert (ssh_rl.rl.marks / "poweroff-b1").stat().st_uid == pwd.getpwnam(ssh_rl.user).pw_uid  # ran on the host
    for where in (ssh_rl.host_home, ssh_rl.rl.cwd, ssh_rl.rl.lab.base):
        assert not list(where.rglob("pwned*")), where


def test_ssh_run_timeout_prints_the_marker_last(ssh_rl: SshRunLab) -> None:
    log = ssh_rl.rl.cwd / "console.log"
    proc = ssh_rl.mq("run", "-s", "b1", "-c", SUCCESS, "-d", "1", "-f", str(ssh_rl.rl.image("sel4test-hang")),
                     "-l", str(log))
    assert proc.returncode == 12, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-2:] == ["Running test SIMULATED0001 ...", TIMEOUT_MARKER]
    assert lines.count(TIMEOUT_MARKER) == 1
    assert proc.stdout == log.read_text()
    assert "timed out (-d) before the completion text" in proc.stderr
    ssh_rl.assert_host_clean("b1", timeout=5)


def test_ssh_kill9_client_during_run_cleans_up_host(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    log = ssh_rl.rl.cwd / "console.log"
    run = spawn(ssh_rl.env(), ssh_rl.rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS,
                "-f", str(ssh_rl.rl.image("sel4test-hang")), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    assert ssh_rl.rl.lab.held() == {"b1"}
    assert consoles(ssh_rl.rl.token, user=ssh_rl.user)
    assert jobs_left(ssh_rl.host_home, ssh_rl.rl.token)
    run.proc.kill()
    run.proc.wait(timeout=10)
    ssh_rl.assert_host_clean("b1", timeout=8)
    assert str(events(ssh_rl.rl.lab, "release")[-1]["reason"]).startswith("client gone")


def test_ssh_host_engine_killed_during_run(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    """Fault case 7: kill -9 of the host-side engine while it holds a board for a run. The
    console dies with it, the client says so, the next waiter reclaims the dead session's
    lock (logged), and the user's next job sweeps the orphaned uploads."""
    rl = ssh_rl.rl
    log = rl.cwd / "console.log"
    run = spawn(ssh_rl.env(), rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS,
                "-f", str(rl.image("sel4test-hang")), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    assert jobs_left(ssh_rl.host_home, rl.token)
    agents = host_engines(ssh_rl)
    assert len(agents) == 1, agents
    os.kill(agents[0], signal.SIGKILL)
    assert run.proc.wait(timeout=10) == 10
    assert "mq engine on labhost ended unexpectedly" in run.err.read_text()
    wait_for(lambda: not consoles(rl.token, user=ssh_rl.user), timeout=5, what="the console to die with the engine")
    assert rl.lab.held() == {"b1"}  # bound to a dead session until someone needs it

    taken = ssh_rl.mq("sem", "-wait", "b1", "-k", "next", "-t", "0")
    assert taken.returncode == 0, taken.stderr
    assert [(e["reason"], e["board"]) for e in events(rl.lab, "reclaim")] == [("dead-session", "b1")]
    assert ssh_rl.mq("sem", "-signal", "b1", "-k", "next").returncode == 0

    again = ssh_rl.mq("run", "-s", "b1", "-c", SUCCESS, "-f", str(rl.image("sel4test-pass")))
    assert again.returncode == 0, again.stderr
    assert jobs_left(ssh_rl.host_home, rl.token) == []


def cpu_ticks(pid: int) -> int:
    """User and system CPU time ``pid`` has used so far, all its threads, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def host_engines(ssh_rl: SshRunLab) -> list[int]:
    """The host-side engine processes of this test's lab (not the login shell, not the board)."""
    out = subprocess.run(["pgrep", "-u", ssh_rl.user, "-af", "mq.engine"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if str(ssh_rl.rl.lab.base) in line and line.split()[1] != "sh" and "simboard" not in line]


def test_ssh_ctrl_c_during_a_stalled_upload(ssh_rl: SshRunLab, children: list[pexpect.spawn]) -> None:
    """Ctrl+C while an upload is stuck (the host reads nothing): out at once with 130, not
    'Unable to ssh'; the host drops the partial upload; nothing was locked."""
    rl = ssh_rl.rl
    big = rl.images / f"big-{rl.token}.img"
    with big.open("wb") as handle:
        handle.truncate(256 << 20)  # more than any SSH window and socket buffers
    child = pty(rl, children, "run", "-s", "b1", "-c", SUCCESS, "-f", str(big), env=ssh_rl.env())
    wait_for(lambda: host_engines(ssh_rl), what="the host engine")
    engines = host_engines(ssh_rl)
    wait_for(lambda: jobs_left(ssh_rl.host_home, rl.token), what="the upload to start")
    for pid in engines:
        os.kill(pid, signal.SIGSTOP)
    try:
        # the sender fills the SSH window and blocks: the client stops using CPU
        wait_for(settled(lambda: cpu_ticks(child.pid), quiet=0.3), timeout=15, what="the upload to stall")
        started = time.monotonic()
        child.sendintr()
        output, status = pty_end(child, timeout=10)
        assert status == 130, output
        assert time.monotonic() - started < PROMPT
        assert "Unable to ssh" not in output
    finally:
        for pid in engines:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not host_engines(ssh_rl), timeout=10, what="the host engine to end")
    wait_for(lambda: jobs_left(ssh_rl.host_home, rl.token) == [], timeout=5, what="the partial upload removed")
    assert rl.lab.held() == set()
    assert queued(rl.lab) == []


def test_ssh_stopped_client_during_run_is_a_lost_connection(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    """A client stopped past the keepalive limit: the host cleans up, and the resumed
    client reports a lost connection (exit 9, what CI retries), not a host failure."""
    rl = ssh_rl.rl
    log = rl.cwd / "console.log"
    run = spawn(ssh_rl.env(), rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS,
                "-f", str(rl.image("sel4test-hang")), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    run.proc.send_signal(signal.SIGSTOP)
    try:
        ssh_rl.assert_host_clean("b1", timeout=10)
    finally:
        run.proc.send_signal(signal.SIGCONT)
    assert run.finish(timeout=15) == 9
    err = run.stderr()
    assert "Unable to ssh to labhost" in err and "connection lost" in err, err
    assert str(events(rl.lab, "release")[-1]["reason"]).startswith("client gone")


def test_ssh_stopped_client_with_a_chatty_console_is_dropped(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    """The console fills every buffer while the client is stopped: the host's engine, blocked
    writing, still gives up after the silence limit (not when the client comes back)."""
    rl = ssh_rl.rl
    chatty = write_image(rl.images / f"chatty-{rl.token}.img", "repeat 400000 Chatty console line {n}", "hang")
    log = rl.cwd / "console.log"
    run = spawn(ssh_rl.env(), rl.cwd, spawned, "run", "run", "-s", "b1", "-c", "never-printed",
                "-f", str(chatty), "-l", str(log))
    wait_for(lambda: log.exists() and "Chatty console line" in log.read_text(errors="replace"), what="the console")
    run.proc.send_signal(signal.SIGSTOP)
    try:
        ssh_rl.assert_host_clean("b1", timeout=15)  # keepalive 1 s x 3, plus the clean-up
    finally:
        run.proc.send_signal(signal.SIGCONT)
    assert run.finish(timeout=30) == 9


def test_ssh_reserve_with_closed_stdin_on_a_busy_board(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    rl = ssh_rl.rl
    assert ssh_rl.mq("sem", "-wait", "b1", "-k", "hold").returncode == 0
    run = spawn(ssh_rl.env(), rl.cwd, spawned, "reserve", "run", "-s", "b1", "-r", "-k", "me")
    wait_for(lambda: len(queued(rl.lab)) == 1, what="the reservation to queue")
    assert ssh_rl.mq("sem", "-signal", "b1", "-k", "hold").returncode == 0
    assert run.finish(timeout=15) == 0, run.stderr()
    ssh_rl.assert_host_clean("b1", timeout=5)


def test_ssh_ctrl_c_during_run(ssh_rl: SshRunLab, children: list[pexpect.spawn]) -> None:
    child = pty(ssh_rl.rl, children, "run", "-s", "b1", "-c", SUCCESS, "-f", str(ssh_rl.rl.image("sel4test-hang")),
                env=ssh_rl.env())
    child.expect("Running test SIMULATED0001", timeout=30)
    assert ssh_rl.rl.lab.held() == {"b1"}
    started = time.monotonic()
    child.sendintr()
    _, status = pty_end(child, timeout=20)
    assert status == 130
    assert time.monotonic() - started < 12
    ssh_rl.assert_host_clean("b1", timeout=2)


def test_ssh_interactive_and_reserve(ssh_rl: SshRunLab, children: list[pexpect.spawn]) -> None:
    env = ssh_rl.env()
    child = pty(ssh_rl.rl, children, "run", "-s", "b1", "-c", "shell>", "-a", "-f", str(ssh_rl.rl.image("interactive")),
                env=env)
    child.expect("console is interactive now")
    child.send("over-ssh-hello\n")
    child.expect("over-ssh-hello")
    child.send("\x1d")
    assert pty_end(child)[1] == 0
    ssh_rl.assert_host_clean("b1", timeout=5)
    os.unlink(ssh_rl.rl.marks / "poweroff-b1")
    child = pty(ssh_rl.rl, children, "run", "-s", "trio", "-r", env=env)
    child.expect("mq: b1 is yours")
    assert ssh_rl.rl.lab.held() == {"b1"}
    child.sendline("")
    assert pty_end(child)[1] == 0
    ssh_rl.assert_host_clean("b1", timeout=5)


def test_ssh_bad_pattern_leaves_nothing_on_host(ssh_rl: SshRunLab) -> None:
    image = ssh_rl.rl.image("sel4test-pass")
    proc = ssh_rl.mq("run", "-s", "b1", "-c", "(unclosed", "-f", str(image))
    assert proc.returncode == 5, proc.stderr
    assert "not a valid regular expression" in proc.stderr
    assert ssh_rl.rl.lab.held() == set()
    assert events(ssh_rl.rl.lab, "grant") == []
    wait_for(lambda: not host_engines(ssh_rl), timeout=10, what="the host engine to end")  # nothing can change after
    assert jobs_left(ssh_rl.host_home, ssh_rl.rl.token) == []  # no uploaded image left behind


# -- 8a. the job's lock taken away behind its back (fault case 23) --------------------------------
LOCKFILE = shutil.which("lockfile") or "/usr/bin/lockfile"
LOCK_LOST = 15  # ExitCode.RUN_LOCK_LOST
LOST_WITHIN = 1.5  # seconds from the break to the end of `mq run` (noticed within 1 s, then the clean-up)
needs_lockfile = pytest.mark.skipif(not os.access(LOCKFILE, os.X_OK), reason="procmail's lockfile(1) is not installed")


def break_with_lockfile(lab: LabFixture, board: str) -> float:
    """Break ``board``'s lock as ``lockfile -l`` does; the new lock's mtime (when it was broken).

    ``lockfile -l 1`` forces only a lock about 2 s old: wait until it is."""
    lock = lab.lock(board)
    mtime = lock.lstat().st_mtime
    wait_for(lambda: time.time() - mtime > 2.1, timeout=10, what="the lock to be old enough for lockfile -l 1")
    broke = subprocess.run([LOCKFILE, "-l", "1", "-s", "0", "-r", "0", str(lock)], capture_output=True, text=True)
    assert broke.returncode == 0 and "Forcing lock" in broke.stderr, broke.stderr
    return lock.lstat().st_mtime


def lost_line(board: str, taken_by: str | None) -> str:
    how = f"taken by {taken_by} (lockfile -l or a -T reclaim)" if taken_by else "removed by someone"
    return f"mq: the lock for {board} was {how}; job stopped, board powered off"


def assert_lost(lab: LabFixture, proc_stdout: str, proc_stderr: str, board: str, taken_by: str | None,
                grant: int | None, started: float, ended: float) -> dict[str, object]:
    """What every lost job must show: the one line, no timeout, stopped soon, audited; its record."""
    assert lost_line(board, taken_by) in proc_stderr.splitlines(), proc_stderr
    assert "timed out" not in proc_stderr
    assert TIMEOUT_MARKER not in proc_stdout + proc_stderr
    assert ended - started < LOST_WITHIN, f"ended {ended - started:.3f} s after the break"
    lost = events(lab, "lock-lost")
    assert [(e["board"], e["taken_by"], e["grant"]) for e in lost] == [(board, taken_by, grant)], lost
    return lost[0]


@needs_lockfile
@pytest.mark.parametrize(("mode", "watch"), [("run", "inotify"), ("held", "inotify"), ("run", "stat")],
                         ids=["run", "held", "run-without-inotify"])
def test_lock_broken_by_lockfile_stops_the_job(rl: RunLab, spawned: list[Spawned], mode: str, watch: str) -> None:
    """Fault case 23: ``lockfile -l`` breaks the job's lock (mq run's own, or the one ``-n`` runs
    on, taken with ``-T 1``). The job notices at once (without inotify: by its lstat every
    0.5 s), stops its console, powers the board off, leaves the new lock alone and exits 15
    naming the new holder; ``-d 30`` never runs out."""
    log = rl.cwd / "console.log"
    held = ["-n", "-k", "K"] if mode == "held" else []
    if mode == "held":
        rl.mq_ok("sem", "-wait", "b1", "-k", "K", "-T", "1")
    env = {**rl.lab.env, "MQ_NO_INOTIFY": "1"} if watch == "stat" else rl.lab.env
    run = spawn(env, rl.cwd, spawned, "run", "run", "-s", "b1", *held, "-c", SUCCESS, "-d", "30",
                "-f", str(HANG_IMG), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    grant = events(rl.lab, "grant")[-1]["grant"]
    broken = break_with_lockfile(rl.lab, "b1")
    new_lock = rl.lab.lock("b1").lstat()
    assert run.finish(timeout=10) == LOCK_LOST, run.stderr()
    ended = time.time()
    me = pwd.getpwuid(os.getuid()).pw_name
    record = assert_lost(rl.lab, run.stdout(), run.stderr(), "b1", me, grant, broken, ended)
    print(f"lock-lost ({mode}, {watch}): noticed {record['noticed_after']} s after the break, "
          f"exited {ended - broken:.3f} s after it")
    assert consoles(f"{rl.home}/") == []  # stopped before the job ended
    assert rl.powered_off("b1")
    assert jobs_left(rl.home) == []
    assert rl.lab.held() == {"b1"}
    after = rl.lab.lock("b1").lstat()
    assert (after.st_ino, after.st_mtime_ns, after.st_uid) == (new_lock.st_ino, new_lock.st_mtime_ns, 0)
    assert [e for e in events(rl.lab, "release") if e.get("outcome") == "released"] == []
    if mode == "run":  # the job's grant is closed as another tool's take-over
        assert [(e["grant"], e["taken_by"]) for e in events(rl.lab, "taken-over")] == [(grant, me)]
    assert queued(rl.lab) == []
    rl.lab.lock("b1").unlink()  # lockfile's lock: removed as lockfile's users do (rm -f)


def test_lock_reclaimed_after_its_t_stops_the_job(rl: RunLab, spawned: list[Spawned]) -> None:
    """The seL4 CI's way (``sem -wait -T``, then ``run -n``) with a ``-T`` shorter than the job:
    the next waiter reclaims the lock, and the job ends at once (exit 15), not at its ``-d``."""
    rl.mq_ok("sem", "-wait", "b1", "-k", "K", "-T", "1")
    grant = events(rl.lab, "grant")[-1]["grant"]
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-n", "-k", "K", "-c", SUCCESS,
                "-d", "30", "-f", str(HANG_IMG), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    waiter = spawn(rl.lab.env, rl.cwd, spawned, "waiter", "sem", "-wait", "b1", "-k", "W")
    assert waiter.finish(timeout=15) == 0, waiter.stderr()
    reclaimed = rl.lab.lock("b1").lstat().st_mtime
    assert run.finish(timeout=10) == LOCK_LOST, run.stderr()
    ended = time.time()
    me = pwd.getpwuid(os.getuid()).pw_name
    record = assert_lost(rl.lab, run.stdout(), run.stderr(), "b1", me, grant, reclaimed, ended)
    print(f"lock-lost (-T reclaim): noticed {record['noticed_after']} s after it, exited {ended - reclaimed:.3f} s")
    assert [(e["reason"], e["grant"]) for e in events(rl.lab, "reclaim")] == [("expired", grant)]
    assert consoles(f"{rl.home}/") == []
    assert rl.powered_off("b1")
    assert jobs_left(rl.home) == []
    assert rl.lab.held() == {"b1"} and key_of(rl.lab, "b1") == "W"  # the reclaimer's lock, untouched
    rl.mq_ok("sem", "-signal", "b1", "-k", "W")
    assert queued(rl.lab) == []


def test_lock_removed_by_force_stops_the_job(rl: RunLab, spawned: list[Spawned]) -> None:
    """``sem -signal -f`` removes the job's lock: nobody holds the board now, and the job says so."""
    log = rl.cwd / "console.log"
    run = spawn(rl.lab.env, rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS, "-d", "30",
                "-f", str(HANG_IMG), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    grant = events(rl.lab, "grant")[-1]["grant"]
    forced = time.time()
    rl.mq_ok("sem", "-signal", "b1", "-f")
    assert run.finish(timeout=10) == LOCK_LOST, run.stderr()
    assert_lost(rl.lab, run.stdout(), run.stderr(), "b1", None, grant, forced, time.time())
    rl.assert_clean("b1")


@needs_lockfile
def test_ssh_lock_broken_by_lockfile_stops_the_job(ssh_rl: SshRunLab, spawned: list[Spawned]) -> None:
    """Case 23 over SSH: root breaks mqalice's run lock with ``lockfile -l`` on the host."""
    rl = ssh_rl.rl
    log = rl.cwd / "console.log"
    run = spawn(ssh_rl.env(), rl.cwd, spawned, "run", "run", "-s", "b1", "-c", SUCCESS, "-d", "30",
                "-f", str(rl.image("sel4test-hang")), "-l", str(log))
    wait_for(lambda: log.exists() and "Running test SIMULATED0001" in log.read_text(), what="the console")
    grant = events(rl.lab, "grant")[-1]["grant"]
    broken = break_with_lockfile(rl.lab, "b1")
    assert run.finish(timeout=10) == LOCK_LOST, run.stderr()
    ended = time.time()
    record = assert_lost(rl.lab, run.stdout(), run.stderr(), "b1", "root", grant, broken, ended)
    print(f"lock-lost (ssh): noticed {record['noticed_after']} s after the break, exited {ended - broken:.3f} s")
    assert record["user"] == ssh_rl.user
    assert consoles(rl.token, user=ssh_rl.user) == []
    assert rl.powered_off("b1")
    wait_for(lambda: jobs_left(ssh_rl.host_home, rl.token) == [], timeout=5, what="uploaded images deleted")
    assert rl.lab.held() == {"b1"} and rl.lab.lock("b1").lstat().st_uid == 0  # root's lock, untouched
    rl.lab.lock("b1").unlink()


# -- 8. the seL4 CI sequence, unchanged ------------------------------------------------------------
@pytest.mark.parametrize("program", ["mq", "mq.sh"])
@pytest.mark.parametrize(("image", "code"), [(PASS_IMG, 0), (FAIL_IMG, 11)], ids=["pass", "fail"])
def test_sel4_ci_sequence(rl: RunLab, program: str, image: Path, code: int) -> None:
    script = BIN / program
    if not script.exists():
        found = shutil.which(program)
        if found is None:
            pytest.skip(f"{program} is not installed")
        script = Path(found)
    cmd = [str(script)]
    board, key, log = "b1", f"ci-{program}-{code}-{os.getpid()}", rl.cwd / "ci.log"

    def ci(*args: str) -> subprocess.CompletedProcess[str]:
        return rl.mq(*args, cmd=cmd)

    first = ci("sem", "-info", board)
    assert (first.returncode, first.stdout) == (0, f"Lock for {board} currently free\n"), first.stderr
    assert ci("sem", "-wait", board, "-k", key, "-T", "1800").returncode == 0
    run = ci("run", "-c", SUCCESS, "-s", board, "-d", "30", "-t", "-1", "-w", "8", "-l", str(log), "-n", "-k", key,
             "-e", "FAILED", "-f", str(image))
    assert run.returncode == code, run.stderr
    assert "Unable to ssh" not in run.stdout + run.stderr
    assert run.stdout == log.read_text()
    assert rl.lab.held() == {board}  # -n: the CI job still holds it for its cleanup
    for args in (("sem", "-cancel", board, "-k", key), ("sem", "-signal", board, "-k", key)):
        step = ci(*args)
        assert step.returncode == 0, (args, step.stderr)
    last = ci("sem", "-info", board)
    assert (last.returncode, last.stdout) == (0, f"Lock for {board} currently free\n"), last.stderr
    assert rl.lab.held() == set()
    assert queued(rl.lab) == []
    wait_for(lambda: not consoles(f"{rl.home}/"), timeout=5, what="console processes to end")
    assert jobs_left(rl.home) == []


# -- console matching across reads -------------------------------------------------------------
# a console that stops mid-line, then finishes the line with a prompt and hangs (its pauses are what is tested)
SPLIT_LINE_BOARD = textwrap.dedent(
    """
    import sys, time
    sys.stdout.write("boot\\nresult: well"); sys.stdout.flush(); time.sleep(0.3)
    sys.stdout.write("ness\\nprompt> "); sys.stdout.flush(); time.sleep(5)
    """
)


@pytest.mark.parametrize(("pattern", "outcome"), [
    ("well$", "timeout"),  # the line turned out to be "result: wellness"
    ("wellness$", "completed"),
    ("prompt> ", "completed"),  # a prompt with no newline
    (r"prompt>\s*$", "completed"),  # ... also with $, once the console is quiet
])
def test_match_at_the_end_of_an_unfinished_line(pattern: str, outcome: str) -> None:
    from mq.engine.host import boot

    console = boot.Console([sys.executable, "-c", SPLIT_LINE_BOARD])
    try:
        found = boot.watch_console(console, lambda _data: None, {"completed": re.compile(pattern, re.MULTILINE)},
                                  time.monotonic() + 2.5)
    finally:
        console.stop()
    assert found == outcome
