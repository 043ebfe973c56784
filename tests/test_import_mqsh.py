"""``mq import-mqsh``: an mq.sh lab (tests/data/mqsh_lab, in mq.sh's format) becomes a lab.toml that
``mq check`` accepts, that lists as mq.sh lists that lab, and whose ``boot``/``power_off`` call the
lab's reboot scripts with exactly the arguments mq.sh's runner gives them.

The expected texts below were taken from the real mq.sh (seL4/machine_queue: mq.sh, scripts/system,
scripts/pool and scripts/runner, run with LC_ALL=C on this same lab; the runner's on-host calls
recorded by a stand-in ``/tftpboot/NAME/reboot``)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import LabFixture, make_lab
from mq.client.mqsh_import import import_lab
from mq.engine.core.inventory import System, load_inventory
from mq.engine.host.boot import Images, expand
from mq.views import render

LAB = Path(__file__).resolve().parent / "data" / "mqsh_lab"
MQ = [sys.executable, "-m", "mq"]
DONE = "All is well"

MQSH_SYSTEMS = """\
+----------------+------+---------+-----------------+----------------+-------+-------+--------+
| Name           | Arch | ISA     | SoC             | CPU            | Cores | RAM   | MaxCLK |
+----------------+------+---------+-----------------+----------------+-------+-------+--------+
|       haswell3 |   x86 |  x86_64 |         haswell |      E3-1220v3 |  4(8) |     ? | 3.1Ghz |
|     odroidc4_1 |   arm | armv8-a |       am-S905X3 |     cortex-a55 |     4 |   4GB | 2.0GHz |
|     odroidc4_2 |   arm | armv8-a |       am-S905X3 |     cortex-a55 |     4 |   4GB | 2.0GHz |
|          sabre |   arm | armv7-a |            imx6 |      cortex-a9 |     4 |   1GB |        |
|         sabre2 |   arm | armv7-a |            imx6 |      cortex-a9 |     ? |     ? | 1.0GHz |
|        skylake |   x86 |  x86_64 |         skylake |        i7-6700 |  4(1) |   8GB | 3.4Ghz |
|         zcu102 |   arm | armv8-a |          zynqmp |     cortex-a53 |     4 |   4GB | 1.2GHz |
+----------------+------+---------+-----------------+----------------+-------+-------+--------+
+------------+-------------------------------------------------------------------------+
| Name       | Systems                                                                 |
+------------+-------------------------------------------------------------------------+
| odroidc4_pool | odroidc4_1 odroidc4_2                                                   |
| sabre_pool | sabre sabre2                                                            |
|   x86_pool | haswell3 skylake                                                        |
+------------+-------------------------------------------------------------------------+
"""
MQSH_SIMPLE = "haswell3\nodroidc4_1\nodroidc4_2\nsabre\nsabre2\nskylake\nzcu102\n"
MQSH_SYSTEM_TSV = """\
name\tarch\tsel4_plat\tisa\tsoc\tcpu\tcores\tram\tmax_clk\tnum_files
haswell3\tx86\tpc99:haswell\tx86_64\thaswell\tE3-1220v3\t4(8)\t?\t3.1Ghz\t2
odroidc4_1\tarm\todroidc4\tarmv8-a\tam-S905X3\tcortex-a55\t4\t4GB\t2.0GHz\t1
odroidc4_2\tarm\todroidc4\tarmv8-a\tam-S905X3\tcortex-a55\t4\t4GB\t2.0GHz\t1
sabre\tarm\timx6:sabre\tarmv7-a\timx6\tcortex-a9\t4\t1GB\t\t1
sabre2\tarm\timx6:sabre\tarmv7-a\timx6\tcortex-a9\t?\t?\t1.0GHz\t1
skylake\tx86\tpc99:skylake\tx86_64\tskylake\ti7-6700\t4(1)\t8GB\t3.4Ghz\t2
zcu102\tarm\tzynqmp:zcu102\tarmv8-a\tzynqmp\tcortex-a53\t4\t4GB\t1.2GHz\t1
"""
MQSH_POOL_TSV = "odroidc4_pool\todroidc4_1\todroidc4_2\nsabre_pool\tsabre\tsabre2\nx86_pool\thaswell3\tskylake\n"
MQSH_FEATURES = """\
+----------------+----------------+------------+
| Name           | PXE boot Linux | Custom DTB |
+----------------+----------------+------------+
|       haswell3 |             no |         no |
|     odroidc4_1 |            yes |        yes |
|     odroidc4_2 |            yes |        yes |
|          sabre |             no |         no |
|         sabre2 |             no |         no |
|        skylake |             no |         no |
|         zcu102 |             no |         no |
+----------------+----------------+------------+
"""
WARNINGS = [  # the fixture's two oddities, each named by file and function
    "mq: scripts/systems/odroidc4_1: SystemNumFiles_odroidc4_1 -L: warning: prints 2: mq has one image count "
    "(files = 1), so mq run -L on odroidc4_1 takes 1",
    "mq: scripts/systems/zcu102: SystemPowerOff_zcu102: warning: function not defined: no power_off (write one "
    "by hand)",
]

# A stand-in for the lab host's /tftpboot/NAME/reboot: it records its arguments (and what the files
# they name hold), then plays a board that prints its image and keeps its console open until stopped.
REBOOT = """\
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
record = {"argv": args, "files": {a: Path(a).read_text() for a in args if os.path.isfile(a)}}
with open(Path(__file__).with_name("calls.jsonl"), "a") as log:
    log.write(json.dumps(record) + "\\n")
if args != ["--shutdown"]:
    print("U-Boot 2024.01 (a board of the test)", flush=True)
    print(Path(args[args.index("-k") + 1]).read_text(), end="", flush=True)
    sys.stdin.read()
"""
FOLDERS = ("odroidc4-1", "odroidc4_1", "odroidc4-2", "odroidc4_2", "haswell3", "skylake", "sabre", "sabre2", "zcu102")


def mq(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def imported(tmp_path: Path, lab: Path = LAB, *options: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path / "out" / "lab.toml"
    out.parent.mkdir(exist_ok=True)
    return out, mq("import-mqsh", str(lab), "-o", str(out), "--tftpboot", str(tmp_path / "tftpboot"), *options)


def board(name: str, drop: tuple[str, ...] = (), **bodies: str) -> str:
    """A system file in mq.sh's format, every function one line; ``drop``: functions left out."""
    functions = {"SystemNumFiles": "echo 1", "SystemName": f"echo {name}", "SystemPowerOff": f"RebootShutdown {name}",
                 "Arch": "echo arm", "ISA": "echo armv8-a", "SOC": "echo imx8", "CPU": "echo cortex-a53",
                 "Cores": "echo 4", "RAM": "echo 2GB", "MaxCLK": "echo 1.2GHz", "Sel4Plat": "echo imx8",
                 "PXELinux": "echo no", "DTB": "echo no", **bodies}
    return "".join(f"{function}_{name}() {{ {body}; }}\n" for function, body in functions.items()
                   if function not in drop)


def lab_copy(tmp_path: Path, systems: dict[str, str], pools: dict[str, str] | None = None) -> Path:
    """The fixture lab with more system and pool files."""
    lab = tmp_path / "mqsh"
    shutil.copytree(LAB, lab)
    for kind, files in (("systems", systems), ("pools", pools or {})):
        for name, text in files.items():
            (lab / "scripts" / kind / name).write_text("#!/bin/sh\n" + text)
    return lab


# -- the fixture imported --------------------------------------------------------------------------
def test_import_writes_what_mq_check_accepts(tmp_path: Path) -> None:
    out, proc = imported(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [*WARNINGS, f"mq: wrote {out}: 7 systems and 3 pools from {LAB} (2 warnings)"]
    assert proc.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    checked = mq("check", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == f"{out}: ok (7 systems, 3 pools)"

    text = out.read_text()
    assert text.startswith(f"# Imported from the mq.sh lab in {LAB}\n# by mq import-mqsh (mq ")
    tb = tmp_path / "tftpboot"
    haswell3 = textwrap.dedent(f"""\
        [systems.haswell3]
        arch = "x86"
        isa = "x86_64"
        soc = "haswell"
        cpu = "E3-1220v3"
        cores = "4(8)"
        ram = "?"
        max_clk = "3.1Ghz"
        sel4_plat = "pc99:haswell"
        files = 2
        pxe_linux = false
        dtb = false
        boot = "{tb}/haswell3/reboot {{bitstream_flag}} -t {{timeout}} -c {{completion}} -e {{error}} -k {{file1}} \
-u {{file2}} {{keep_alive}}"
        power_off = "{tb}/haswell3/reboot --shutdown"
        """)
    assert haswell3 in text
    odroid = (f'boot = "{tb}/odroidc4-1/reboot {{linux}} {{dtb_flag}} {{bitstream_flag}} -t {{timeout}} -c '
              f'{{completion}} -e {{error}} -k {{file1}} {{keep_alive}}"\n'
              f'power_off = "{tb}/odroidc4_1/reboot --shutdown"\n')
    assert odroid in text
    assert "# SystemNumFiles_odroidc4_1 -L: prints 2: mq has one image count (files = 1)" in text
    assert '[systems.zcu102]\n' in text and 'power_off' not in text.split("[systems.zcu102]")[1].split("\n\n")[0]
    assert text.endswith('[pools.x86_pool]\nsystems = ["haswell3", "skylake"]\n')

    inventory = load_inventory(str(out))
    assert list(inventory.systems) == ["haswell3", "odroidc4_1", "odroidc4_2", "sabre", "sabre2", "skylake", "zcu102"]
    assert inventory.systems["sabre2"].soc == "imx6"  # not the value of the backup file sabre2~
    assert inventory.systems["sabre"].max_clk == ""
    assert (inventory.systems["odroidc4_2"].pxe_linux, inventory.systems["odroidc4_2"].dtb) == (True, True)


def test_listings_are_mq_sh_s(tmp_path: Path) -> None:
    out, proc = imported(tmp_path)
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, "MQ_HOST": "local", "MQ_BASE": str(tmp_path / "base"), "MQ_LAB": str(out)}
    assert mq("system-tsv", env=env).stdout == MQSH_SYSTEM_TSV
    assert mq("pool-tsv", env=env).stdout == MQSH_POOL_TSV
    inventory = load_inventory(str(out))
    for lines, expected in ((render.systems_lines(inventory, as_mqsh=True), MQSH_SYSTEMS),
                            (render.systems_simple(inventory, as_mqsh=True), MQSH_SIMPLE),
                            (render.features_lines(inventory, as_mqsh=True), MQSH_FEATURES)):
        assert "".join(line + "\n" for line in lines) == expected


def test_stdout_by_default_and_an_existing_file_is_kept(tmp_path: Path) -> None:
    proc = mq("import-mqsh", str(LAB), "--tftpboot", "/tftpboot")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"mq: imported 7 systems and 3 pools from {LAB} (2 warnings)"
    assert 'power_off = "/tftpboot/sabre/reboot --shutdown"\n' in proc.stdout
    out, first = imported(tmp_path)
    assert first.returncode == 0
    out.write_text("# mine\n")
    again = imported(tmp_path)[1]
    assert (again.returncode, again.stderr) == (5, f"mq: {out}: exists (--force replaces it)\n")
    assert out.read_text() == "# mine\n"
    forced = imported(tmp_path, LAB, "--force")[1]
    assert forced.returncode == 0, forced.stderr
    assert out.read_text().startswith("# Imported from")
    assert [p.name for p in out.parent.iterdir()] == ["lab.toml"]  # no temporary file left


@pytest.mark.parametrize(("args", "message"), [
    (["@/nowhere"], "nowhere: no such folder"),
    (["@"], "no scripts/systems/ folder: not an mq.sh lab"),
    ([str(LAB), "--tftpboot", "tftpboot"], 'mq: --tftpboot "tftpboot": give an absolute path without braces'),
    ([str(LAB), "--tftpboot", "/srv/{system}"], "give an absolute path without braces"),
    ([str(LAB), "-o", "@"], "is a folder (give a file name)"),
    ([str(LAB), "-o", "@/no/such/lab.toml"], "/no/such: no such folder"),
])
def test_bad_input_exits_5(tmp_path: Path, args: list[str], message: str) -> None:
    proc = mq("import-mqsh", *(str(tmp_path) + a[1:] if a.startswith("@") else a for a in args))
    assert proc.returncode == 5 and message in proc.stderr, proc.stderr


# -- problems: named, every one, and nothing written -------------------------------------------------
def test_problems_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    lab = lab_copy(tmp_path, systems={
        "nofiles": board("nofiles", drop=("SystemNumFiles", "Cores")),
        "failing": board("failing", SystemNumFiles="echo 'no such board' >&2; return 1"),
        "syntax": "Arch_syntax() { echo arm\n",
        "quits": board("quits") + "exit 0\n",
    }, pools={
        "broken_pool": "Members_broken_pool() { echo sabre; }\n",
        "odd_pool": "Systems_odd_pool() { echo sabre sabre kzm ghost; }\n",
    })
    out, proc = imported(tmp_path, lab)
    assert proc.returncode == 6, proc.stderr
    assert not out.exists()
    lines = proc.stderr.splitlines()
    syntax = next(line for line in lines if line.startswith("mq: scripts/systems/syntax: "))
    assert syntax.startswith("mq: scripts/systems/syntax: cannot be sourced: it exits, or has a syntax error (")
    assert syntax.endswith("; --shell bash reads files written for bash")
    assert [line for line in lines if line != syntax] == [
        "mq: scripts/systems/quits: cannot be sourced: it exits, or has a syntax error",
        "mq: scripts/systems/failing: SystemNumFiles_failing: exited 1 (no such board)",
        "mq: scripts/systems/nofiles: SystemNumFiles_nofiles: function not defined",
        "mq: scripts/systems/nofiles: Cores_nofiles: warning: function not defined: left empty, as mq.sh shows it",
        *WARNINGS,
        "mq: scripts/pools/broken_pool: Systems_broken_pool: function not defined",
        "mq: scripts/pools/odd_pool: Systems_odd_pool: warning: lists sabre twice: once kept",
        "mq: scripts/pools/odd_pool: Systems_odd_pool: warning: lists kzm, in scripts/systems/unavailable/: left out",
        "mq: scripts/pools/odd_pool: Systems_odd_pool: warning: lists ghost, not a system of this lab: left out",
        f"mq: 5 problems in {lab}: nothing written",
    ]


def test_power_off_is_found_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "powered-off"
    lab = lab_copy(tmp_path, systems={
        "careful": board("careful", SystemPowerOff=f"touch {marker}; RebootShutdown careful-psu"),
        "custom": board("custom", SystemPowerOff="echo off", PXELinux="echo Yes"),
    })
    result = import_lab(str(lab), str(tmp_path / "tb"), "sh")
    assert not marker.exists()  # no program runs while SystemPowerOff is looked at
    assert [f.line() for f in result.findings if "custom" in f.where] == [
        'scripts/systems/custom: PXELinux_custom: warning: printed "Yes": false (mq.sh takes only "yes" for yes)',
        "scripts/systems/custom: SystemPowerOff_custom: warning: does not call RebootShutdown (it returned 0): "
        "no power_off (write one by hand)",
    ]
    systems = {s.name: s for s in result.systems}
    assert systems["careful"].values["power_off"] == f"{tmp_path}/tb/careful-psu/reboot --shutdown"
    assert "power_off" not in systems["custom"].values and systems["custom"].values["pxe_linux"] is False


def test_bash_only_files_need_shell_bash(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    lab = lab_copy(tmp_path, systems={"bashy": board("bashy").replace("SystemNumFiles_bashy()",
                                                                         "function SystemNumFiles_bashy()")})
    assert "mq: scripts/systems/bashy: cannot be sourced" in imported(tmp_path, lab)[1].stderr
    out, proc = imported(tmp_path, lab, "--shell", "bash")
    assert proc.returncode == 0, proc.stderr
    assert "[systems.bashy]" in out.read_text()


def test_a_function_that_hangs_is_stopped_and_named(tmp_path: Path) -> None:
    lab = lab_copy(tmp_path, systems={}, pools={"slow_pool": "Systems_slow_pool() { sleep 600; echo sabre; }\n"})
    result = import_lab(str(lab), "/tftpboot", "sh", time_limit=1.0)
    assert [f.line() for f in result.errors] == [
        "scripts/pools/slow_pool: Systems_slow_pool: did not finish within 1 s: nothing after it was read"]
    assert result.systems == []


def test_a_lab_of_sixty_boards_is_read_by_one_shell_at_once(tmp_path: Path) -> None:
    systems = {f"b{n:02d}": board(f"b{n:02d}", SOC="echo imx8" if n % 2 else "echo imx6") for n in range(60)}
    pool = "Systems_even_pool() { for b in $(SystemList); do if [ \"$(SOC_$b)\" = imx6 ]; then echo $b; fi; done; }\n"
    lab = lab_copy(tmp_path, systems=systems, pools={"even_pool": pool})
    start = time.monotonic()
    result = import_lab(str(lab), "/tftpboot", "sh")
    took = time.monotonic() - start
    assert result.errors == [] and len(result.systems) == 67
    assert next(p.members for p in result.pools if p.name == "even_pool") == [*(f"b{n:02d}" for n in range(0, 60, 2)),
                                                                              "sabre", "sabre2"]
    assert took < 10, took  # about 0.1 s here: one shell, not one a function


# -- boot and power_off: what mq run passes the lab's reboot scripts --------------------------------
@pytest.fixture
def run_lab(tmp_path: Path, isolated_env: Path) -> tuple[LabFixture, Path, Path]:
    """A local lab whose inventory is the imported one, its reboot scripts recording stand-ins."""
    tftpboot = tmp_path / "tftpboot"
    for folder in FOLDERS:
        script = tftpboot / folder / "reboot"
        script.parent.mkdir(parents=True)
        script.write_text(f"#!{sys.executable}\n{REBOOT}")
        script.chmod(0o755)
    lab = make_lab(tmp_path / "lab")
    proc = mq("import-mqsh", str(LAB), "-o", str(lab.inventory), "--force", "--tftpboot", str(tftpboot))
    assert proc.returncode == 0, proc.stderr
    images = tmp_path / "images"
    images.mkdir()
    for name, text in (("kernel", f"kernel image\nBooting seL4\n{DONE}\n"), ("app", "app image\n"),
                       ("board.dtb", "dtb blob\n"), ("fpga.bit", "bitstream\n")):
        (images / name).write_text(text)
    return lab, tftpboot, images


def calls(tftpboot: Path, folder: str) -> list[list[str]]:
    """The argument lists ``folder``'s reboot script was called with, each file named by its first line."""
    path = tftpboot / folder / "calls.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [[f"<{r['files'][a].splitlines()[0]}>" if a in r["files"] else a for a in r["argv"]] for r in records]


@pytest.mark.parametrize(("board", "options", "boot", "expected"), [
    # mq.sh run -s B -c TEXT -f kernel: the runner's `reboot -t -1 -c TEXT -e '' -k IMAGE`
    ("odroidc4_2", ["-f", "@kernel"], "odroidc4-2",
     ["-t", "-1", "-c", DONE, "-e", "", "-k", "<kernel image>"]),
    # -L -b DTB -d 30 -e FAIL on a board that PXE-boots Linux from one image
    ("odroidc4_2", ["-L", "-b", "@board.dtb", "-d", "30", "-e", "FAIL", "-f", "@kernel"], "odroidc4-2",
     ["-L", "-b", "<dtb blob>", "-t", "30", "-c", DONE, "-e", "FAIL", "-k", "<kernel image>"]),
    # an x86 board's two images, and -a (keep alive: "-a -i")
    ("haswell3", ["-a", "-f", "@kernel", "-f", "@app"], "haswell3",
     ["-t", "-1", "-c", DONE, "-e", "", "-k", "<kernel image>", "-u", "<app image>", "-a", "-i"]),
    # --bitstream where the runner puts its $bitstreamflag (on the lab host it is left empty: a flaw)
    ("zcu102", ["--bitstream", "@fpga.bit", "-f", "@kernel"], "zcu102",
     ["--bitstream", "<bitstream>", "-t", "-1", "-c", DONE, "-e", "", "-k", "<kernel image>"]),
])
def test_run_passes_the_runners_arguments(run_lab: tuple[LabFixture, Path, Path], board: str, options: list[str],
                                          boot: str, expected: list[str]) -> None:
    lab, tftpboot, images = run_lab
    args = [str(images / a[1:]) if a.startswith("@") else a for a in options]
    proc = mq("run", "-s", board, "-c", DONE, *args, env=lab.env, cwd=images)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"U-Boot 2024.01 (a board of the test)\nkernel image\nBooting seL4\n{DONE}\n" in proc.stdout
    assert [argv for argv in calls(tftpboot, boot) if argv != ["--shutdown"]] == [expected]
    if board != "zcu102":  # mq runs power_off after the job: SystemPowerOff's `RebootShutdown NAME`
        assert calls(tftpboot, board)[-1:] == [["--shutdown"]]
    assert lab.held() == set()


def test_expansion_of_the_runners_placeholders() -> None:
    system = System("s", files=1, dtb=True, pxe_linux=True)
    template = "r {linux} {dtb_flag} {bitstream_flag} -t {timeout} -c {completion} -e {error} -k {file1} {keep_alive}"
    bare = expand(template, system, Images(files=["/j/k"]), "systems.s.boot")
    assert bare == ["r", "-t", "-1", "-c", "", "-e", "", "-k", "/j/k"]  # empty texts stay one argument each
    full = expand(template, system, Images(files=["/j/k"], dtb="/j/d", bitstream="/j/b", linux=True,
                                           completion="All is well", error="FAIL", timeout=2.5, keep_alive=True),
                  "systems.s.boot")
    assert full == ["r", "-L", "-b", "/j/d", "--bitstream", "/j/b", "-t", "2.5", "-c", "All is well", "-e", "FAIL",
                    "-k", "/j/k", "-a", "-i"]
    for timeout, shown in ((30.0, "30"), (0.0, "0"), (-1.0, "-1"), (float("inf"), "-1"), (1e12, "-1")):
        assert expand("r {timeout}", system, Images(timeout=timeout), "systems.s.boot") == ["r", shown]
