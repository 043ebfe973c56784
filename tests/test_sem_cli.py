"""``mq sem`` and the listing verbs, driven through the real CLI in real processes.

Every form of ``mq.sh sem`` is checked against the exact lines mq.sh prints
(see shared/reference/mq-sh.md), plus mq's own additions (grant numbers,
waiters, ``--json``). Exit codes are the named ones of ``mq.engine.core.errors``.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LabFixture, run_mq, spawn_mq, wait_for

ME = pwd.getpwuid(os.getuid()).pw_name
BIN = Path(sys.executable).parent
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000"
VALID_NAMES = "Valid systems: b1 b2 b3 solo x86a x86b; pools: trio pair x86"


# -- helpers -----------------------------------------------------------------------
def run_all(lab: LabFixture, *argvs: tuple[str, ...], user: str | None = None,
            timeout: float = 30) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent ``mq`` commands at once (keeps the suite fast)."""
    procs = [spawn_mq(lab, *argv, user=user) for argv in argvs]
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(list(argv), proc.returncode, out, err))
    return done


def stat_y(path: Path) -> str:
    """What ``stat -c %y`` (the tool mq.sh uses) prints for ``path`` in UTC."""
    proc = subprocess.run(["stat", "-c", "%y", str(path)], capture_output=True, text=True, check=True,
                          env={**os.environ, "TZ": "UTC"})
    return proc.stdout.strip()


def wait_for_tickets(lab: LabFixture, count: int, timeout: float = 10) -> None:
    wait_for(lambda: len([t for t in lab.tickets() if not t.endswith(".cancel")]) >= count, timeout=timeout,
             what=f"{count} waiting tickets")


def plant_legacy_lock(lab: LabFixture, board: str, content: str = "0\n") -> None:
    """A lock as procmail ``lockfile -r0 DIR/board.lock`` makes it (no key file)."""
    fd = os.open(lab.lock(board), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.write(fd, content.encode())
    os.close(fd)


def grant_number(stderr: str) -> int:
    match = re.search(r"grant #(\d+)", stderr)
    assert match, stderr
    return int(match.group(1))


def shell_read_mr_info(lab: LabFixture, name: str) -> list[str]:
    """Parse ``-mr-info`` exactly as mq.sh's users do, with the shell's ``read``."""
    script = ('"$1" -m mq sem -mr-info "$2" | { read system lockstate user day time zone key; '
              'printf "%s\\n" "$system" "$lockstate" "$user" "$day" "$time" "$zone" "$key"; }')
    proc = subprocess.run(["sh", "-c", script, "sh", sys.executable, name], env=lab.env, capture_output=True,
                          text=True, timeout=30, check=True)
    return proc.stdout.split("\n")[:7]


# -- -info / -mr-info / dumpall --------------------------------------------------------
def test_info_mr_info_dumpall_exact_lines(lab: LabFixture) -> None:
    free_info, free_mr, empty_dump = run_all(lab, ("sem", "-info", "b1"), ("sem", "-mr-info", "b1"),
                                             ("sem", "dumpall"))
    assert (free_info.returncode, free_info.stdout) == (0, "Lock for b1 currently free\n")
    assert (free_mr.returncode, free_mr.stdout) == (0, "b1 FREE\n")
    assert (empty_dump.returncode, empty_dump.stdout) == (0, "")

    took = run_mq(lab, "sem", "-wait", "b1", "-k", "job 42", "-T", "1800", check=True)
    assert took.stdout == "b1\n"
    assert re.fullmatch(r"mq: Acquired lock for b1, grant #\d+\n", took.stderr)
    grant = grant_number(took.stderr)
    since = stat_y(lab.lock("b1"))
    assert re.fullmatch(DATE, since)

    info, mr_b1, mr_b2, dump = run_all(lab, ("sem", "-info", "b1"), ("sem", "-mr-info", "b1"),
                                       ("sem", "-mr-info", "b2"), ("sem", "dumpall"))
    asked = time.time()
    assert info.returncode == 0
    first, second = info.stdout.splitlines()
    assert first == f"Lock for b1 held by {ME} since {since}, timeout 1800 with key 'job 42'"
    held = re.fullmatch(rf"  grant #{grant}, held (\d+)s", second)  # 0s on a quiet machine
    assert held is not None and int(held.group(1)) <= asked - lab.lock("b1").stat().st_mtime + 1, second
    assert mr_b1.stdout == f"b1 LOCKED {ME} {since} job 42\n"
    assert mr_b2.stdout == "b2 FREE\n"
    assert dump.stdout == f"b1 LOCKED {ME} {since} job 42\n"
    day, clock, zone = since.split(" ")
    assert shell_read_mr_info(lab, "b1") == ["b1", "LOCKED", ME, day, clock, zone, "job 42"]
    assert shell_read_mr_info(lab, "b2")[:2] == ["b2", "FREE"]

    # the fencing token only goes up
    again = run_mq(lab, "sem", "-wait", "b2", check=True)
    assert grant_number(again.stderr) > grant
    assert run_mq(lab, "sem", "dumpall").stdout.splitlines() == [
        f"b1 LOCKED {ME} {since} job 42",
        f"b2 LOCKED {ME} {stat_y(lab.lock('b2'))}",  # no key: six fields, as mq.sh
    ]


def test_info_lists_waiters_in_arrival_order_and_cancel_ends_them(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "H", check=True)
    plant_legacy_lock(lab, "b2")
    plant_legacy_lock(lab, "b3")
    first = spawn_mq(lab, "sem", "-wait", "b1", "-k", "W1")
    wait_for_tickets(lab, 1)
    second = spawn_mq(lab, "sem", "--wait", "trio", "-k", "W2")
    try:
        wait_for_tickets(lab, 2)
        info_b1, info_trio = run_all(lab, ("sem", "-info", "b1"), ("sem", "-info", "trio"))
        lines = info_b1.stdout.splitlines()
        assert lines[0].startswith(f"Lock for b1 held by {ME} since ")
        assert lines[0].endswith(", timeout 0 with key 'H'")
        assert re.fullmatch(r"  grant #\d+, held \d+s", lines[1])
        assert re.fullmatch(rf"  waiting 1: {ME} key 'W1' since \d\d:\d\d:\d\d \(\d+s\)", lines[2])
        assert re.fullmatch(rf"  waiting 2: {ME} key 'W2' via trio since \d\d:\d\d:\d\d \(\d+s\)", lines[3])
        assert len(lines) == 4

        trio = info_trio.stdout.splitlines()
        held = [line for line in trio if line.startswith("Lock for ")]
        assert [line.split()[2] for line in held] == ["b1", "b2", "b3"]  # every member, in order
        assert all(" held by " in line for line in held)
        # a legacy lock (content "0", no key file) shows timeout 0 and no key, as mq.sh
        assert any(line.startswith("Lock for b2 held by") and line.endswith("timeout 0")
                   for line in trio)

        cancel_1, cancel_2 = run_all(lab, ("sem", "-cancel", "b1", "-k", "W1"),
                                     ("sem", "--cancel", "trio", "-k", "W2"))
        assert cancel_1.returncode == 0 and "Cancelled 1 wait(s) for b1 with key 'W1'" in cancel_1.stderr
        assert cancel_2.returncode == 0 and "Cancelled 1 wait(s) for trio with key 'W2'" in cancel_2.stderr
        for proc, target in ((first, "b1"), (second, "trio")):
            out, err = proc.communicate(timeout=10)
            assert proc.returncode == 2
            assert out == ""
            assert f"Failed to acquire lock for system ({target})" in err
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert lab.tickets() == []
    assert lab.held() == {"b1", "b2", "b3"}


# -- pools ------------------------------------------------------------------------
def test_pool_wait_prints_board_and_signal_releases_only_callers_key(shared_lab: LabFixture,
                                                                     test_users: tuple[str, ...]) -> None:
    alice, bob, _ = test_users
    lab = shared_lab
    a1 = run_mq(lab, "sem", "-wait", "trio", "-k", "K", user=alice, check=True)
    b1 = run_mq(lab, "sem", "-wait", "trio", "-k", "K", user=bob, check=True)
    a2 = run_mq(lab, "sem", "-wait", "trio", "-k", "other", "-t", "0", user=alice, check=True)
    # the chosen board is alone on the last stdout line (scripts do `board=$(mq sem -wait POOL)`)
    assert [p.stdout.splitlines()[-1] for p in (a1, b1, a2)] == ["b1", "b2", "b3"]
    assert "Acquired lock for b1 (pool trio)" in a1.stderr

    info = run_mq(lab, "sem", "-info", "trio", check=True).stdout.splitlines()
    held = [line for line in info if line.startswith("Lock for ")]
    assert [line.split()[2:6] for line in held] == [["b1", "held", "by", alice], ["b2", "held", "by", bob],
                                                    ["b3", "held", "by", alice]]
    assert any(re.fullmatch(r"  grant #\d+ via pool trio, held \d+s", line) for line in info)

    released = run_mq(lab, "sem", "-signal", "trio", "-k", "K", user=alice)
    assert (released.returncode, released.stdout, released.stderr) == (0, "", "mq: Released lock for b1\n")
    assert lab.held() == {"b2", "b3"}
    assert lab.key("b2").read_text() == "K\n"  # bob's lock with the same key is untouched
    assert lab.key("b3").read_text() == "other\n"  # alice's lock with another key is untouched

    none_left = run_mq(lab, "sem", "-signal", "trio", "-k", "K", user=alice)
    assert none_left.returncode == 3
    assert lab.held() == {"b2", "b3"}

    not_holder = run_mq(lab, "sem", "-signal", "b2", "-k", "K", user=alice)
    assert not_holder.returncode == 3
    assert "held by mqbob" in not_holder.stderr
    assert lab.held() == {"b2", "b3"}


# -- exit codes ----------------------------------------------------------------------
def test_unknown_name_exit_1_lists_valid_names(lab: LabFixture) -> None:
    for proc in run_all(lab, ("sem", "-info", "nope"), ("sem", "-wait", "nope", "-t", "0"),
                        ("sem", "-signal", "nope"), ("sem", "-mr-info", "nope"), ("sem", "-cancel", "nope")):
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        assert "Unknown system or pool 'nope'" in proc.stderr
        assert VALID_NAMES in proc.stderr
    assert not (lab.base / ".mq").exists()


def test_not_holder_wrong_key_and_retake_exit_codes(lab: LabFixture) -> None:
    free = run_mq(lab, "sem", "-signal", "b1")
    assert free.returncode == 3 and "not held" in free.stderr

    run_mq(lab, "sem", "-wait", "b1", "-k", "K", check=True)
    wrong_key, same_key, no_key = run_all(lab, ("sem", "-signal", "b1", "-k", "X"),
                                          ("sem", "-wait", "b1", "-k", "K", "-t", "0"),
                                          ("sem", "-wait", "b1", "-t", "0"))
    assert wrong_key.returncode == 3 and "different key" in wrong_key.stderr
    for proc in (same_key, no_key):
        assert proc.returncode == 4, proc
        assert "Please explicitly release" in proc.stderr
        assert proc.stdout == ""
    assert lab.key("b1").read_text() == "K\n"

    # another key of the same user is a real (failing, here) wait, not a refusal
    other = run_mq(lab, "sem", "-wait", "b1", "-k", "L", "-t", "0")
    assert other.returncode == 2
    assert "Failed to acquire lock for system (b1)" in other.stderr
    assert lab.tickets() == []
    assert run_mq(lab, "sem", "-signal", "b1", "-k", "K").stderr == "mq: Released lock for b1\n"
    assert lab.held() == set()


BAD_KEYS = ["a\nb", "", "x" * 257, "tab\there", "esc\x1b[1m", "nul-free\rcr"]


def test_bad_key_exit_5(lab: LabFixture) -> None:
    results = run_all(lab, *[("sem", "-wait", "b1", "-k", key, "-t", "0") for key in BAD_KEYS])
    for key, proc in zip(BAD_KEYS, results, strict=True):
        assert proc.returncode == 5, (key, proc)
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert lab.held() == set()
    assert not lab.key("b1").exists()


USAGE_ERRORS = [
    ("sem",),  # no action
    ("sem", "-wait"),  # no name
    ("sem", "-bogus", "b1"),  # unknown option
    ("sem", "-wait", "b1", "-t", "x"),  # -t not an integer
    ("sem", "-wait", "b1", "-w", "soon"),  # -w not a number
    ("sem", "-info", "b1", "-k"),  # option without its value
    ("nosuchverb",),
]


def test_usage_errors_exit_64(lab: LabFixture) -> None:
    results = run_all(lab, *USAGE_ERRORS)
    wrong = [(p.args, p.returncode, p.stderr.strip()) for p in results if p.returncode != 64]
    assert wrong == [], "usage errors must exit 64 (EXIT_USAGE)"
    for proc in results:
        assert "unexpected error" not in proc.stderr
        assert proc.stdout == ""
    assert lab.held() == set()


def test_conflicting_or_bad_option_values_exit_5(lab: LabFixture) -> None:
    """README: 5 is bad input, including conflicting options."""
    two_actions, negative_timeout = run_all(lab, ("sem", "-wait", "-signal", "b1"), ("sem", "-wait", "b1", "-T", "-1"))
    assert two_actions.returncode == 5 and "only one of" in two_actions.stderr
    assert negative_timeout.returncode == 5 and "-T" in negative_timeout.stderr
    negative_period, = run_all(lab, ("sem", "-wait", "b1", "-w", "-1", "-t", "3"))
    assert negative_period.returncode == 5 and "-w" in negative_period.stderr
    assert lab.held() == set()
    assert lab.tickets() == []


def test_info_says_when_a_timeout_has_passed(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "K", "-T", "1", check=True)
    lock = lab.base / "b1.lock"
    os.utime(lock, ns=(lock.stat().st_atime_ns, lock.stat().st_mtime_ns - 5_000_000_000), follow_symlinks=False)
    info = run_mq(lab, "sem", "-info", "b1", check=True).stdout
    assert "its -T 1 has passed" in info, info
    again = run_mq(lab, "sem", "-wait", "b1", "-t", "0")
    assert again.returncode == 0, again.stderr  # your own expired lock is not a re-take


# -- spellings and options ----------------------------------------------------------------
def test_mq_sh_spellings_and_long_forms(lab: LabFixture) -> None:
    one, two = run_all(lab, ("sem", "-wait", "b1", "-k", "K", "-T", "1800", "-t", "-1", "-w", "8"),
                       ("sem", "--wait", "b2", "--key", "K", "-T", "5"))
    assert (one.returncode, one.stdout) == (0, "b1\n")
    assert (two.returncode, two.stdout) == (0, "b2\n")
    assert lab.lock("b1").read_text() == "1800\n"  # -T is the lock file's content, as lockfile/mq.sh
    assert lab.lock("b2").read_text() == "5\n"
    assert lab.key("b2").read_text() == "K\n"
    assert oct(lab.lock("b1").stat().st_mode & 0o777) == "0o444"

    short_info, long_info, short_mr, long_mr = run_all(lab, ("sem", "-info", "b1"), ("sem", "--info", "b1"),
                                                       ("sem", "-mr-info", "b1"), ("sem", "--mr-info", "b1"))
    assert short_info.stdout == long_info.stdout != ""
    assert short_mr.stdout == long_mr.stdout != ""

    started = time.monotonic()
    budget = run_mq(lab, "sem", "-wait", "b1", "-k", "L", "-w", "0.4", "-t", "2")
    elapsed = time.monotonic() - started
    assert budget.returncode == 2
    assert "Failed to acquire lock for system (b1)" in budget.stderr
    assert 0.7 < elapsed < 8

    r1, r2 = run_all(lab, ("sem", "-signal", "b1", "-k", "K"), ("sem", "--signal", "b2", "-k", "K"))
    assert (r1.returncode, r1.stdout, r1.stderr) == (0, "", "mq: Released lock for b1\n")
    assert (r2.returncode, r2.stdout, r2.stderr) == (0, "", "mq: Released lock for b2\n")
    assert lab.held() == set()
    assert not lab.key("b1").exists() and not lab.key("b2").exists()


# -- listings ------------------------------------------------------------------------
def test_mqsh_style_text_values_are_kept_as_given(lab: LabFixture) -> None:
    """An ``mq.sh`` lab writes cores as ``4(1)`` or ``?``, RAM and clock as it likes: taken as
    text, printed as given, matched as text; JSON keeps a number a number."""
    lab.inventory.write_text('[systems.odd]\ncores = "4(1)"\nram = "?"\nmax_clk = ""\n'
                             '[systems.plain]\ncores = 4\nram = 2048\n'
                             '[systems.unknown]\ncores = "?"\n'
                             '[pools.quad]\nmatch = { cores = 4 }\n')
    tsv = run_mq(lab, "system-tsv", check=True).stdout.splitlines()
    assert tsv[1:] == ["odd\t\t\t\t\t\t4(1)\t?\t\t1", "plain\t\t\t\t\t\t4\t2048\t\t1",
                       "unknown\t\t\t\t\t\t?\t\t\t1"]
    assert run_mq(lab, "pool-tsv", check=True).stdout == "quad\tplain\n"
    systems = json.loads(run_mq(lab, "system-tsv", "--json", check=True).stdout)["data"]
    assert [s["cores"] for s in systems] == ["4(1)", 4, "?"]
    assert run_mq(lab, "check").returncode == 0


def test_listing_commands(lab: LabFixture) -> None:
    table, simple, system_tsv, pool_tsv, features, bad = run_all(
        lab, ("systems",), ("systems", "simple"), ("system-tsv",), ("pool-tsv",), ("features",),
        ("systems", "fancy"))
    assert all(p.returncode == 0 for p in (table, simple, system_tsv, pool_tsv, features))
    assert bad.returncode == 5 and "simple" in bad.stderr, bad  # bad input, naming the one mode there is

    assert simple.stdout.splitlines() == ["b1", "b2", "b3", "solo", "x86a", "x86b", "trio", "pair", "x86"]
    assert system_tsv.stdout.splitlines() == [
        "name\tarch\tsel4_plat\tisa\tsoc\tcpu\tcores\tram\tmax_clk\tnum_files",
        "b1\tarm\t\t\timx8\t\t\t\t\t1",
        "b2\tarm\t\t\timx8\t\t\t\t\t1",
        "b3\tarm\t\t\timx8\t\t\t\t\t1",
        "solo\triscv\t\t\t\t\t\t\t\t1",
        "x86a\tx86\t\t\t\t\t\t\t\t2",
        "x86b\tx86\t\t\t\t\t\t\t\t2",
    ]
    assert pool_tsv.stdout.splitlines() == ["trio\tb1\tb2\tb3", "pair\tb3\tsolo", "x86\tx86a\tx86b"]
    assert features.stdout.splitlines() == [
        "name\tpxe_linux\tdtb",
        "b1\tno\tno", "b2\tno\tno", "b3\tno\tno", "solo\tno\tno", "x86a\tyes\tno", "x86b\tno\tyes",
    ]

    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "arch", "sel4_plat", "isa", "soc", "cpu", "cores", "ram", "max_clk",
                                "num_files"]
    assert [line.split()[0] for line in lines[1:7]] == ["b1", "b2", "b3", "solo", "x86a", "x86b"]
    assert lines[7] == ""
    assert [line.split() for line in lines[8:]] == [["pool", "members"], ["trio", "b1", "b2", "b3"],
                                                    ["pair", "b3", "solo"], ["x86", "x86a", "x86b"]]


# -- --json contract -------------------------------------------------------------------
HOLDER_KEYS = {"user", "uid", "since", "timeout", "key", "kind", "grant", "pool", "session", "expired"}
STATE_KEYS = {"board", "state", "holder", "waiters"}


def envelope(proc: subprocess.CompletedProcess[str], kind: str) -> object:
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, "a --json answer is exactly one line"
    doc = json.loads(lines[0])
    assert set(doc) == {"mq", "kind", "data"}
    assert doc["mq"] == 1
    assert doc["kind"] == kind
    return doc["data"]


def test_json_envelopes_contract(lab: LabFixture) -> None:
    """Pins the documented, versioned JSON output; a change here is a version bump."""
    grant = envelope(run_mq(lab, "sem", "-wait", "trio", "-k", "K", "-T", "60", "--json"), "grant")
    assert set(grant) == {"board", "target", "key", "timeout", "grant", "waited", "took_over"}
    assert grant["took_over"] is None
    assert (grant["board"], grant["target"], grant["key"], grant["timeout"]) == ("b1", "trio", "K", 60)
    assert isinstance(grant["grant"], int) and isinstance(grant["waited"], (int, float))

    info, mr_info, dump, systems = run_all(lab, ("sem", "-info", "trio", "--json"),
                                           ("sem", "-mr-info", "b2", "--json"), ("sem", "dumpall", "--json"),
                                           ("systems", "--json"))
    states = envelope(info, "info")
    assert isinstance(states, list) and [s["board"] for s in states] == ["b1", "b2", "b3"]
    for state in states:
        assert set(state) == STATE_KEYS
    held, free = states[0], states[1]
    assert held["state"] == "locked" and free["state"] == "free" and free["holder"] is None
    assert set(held["holder"]) == HOLDER_KEYS
    assert held["holder"]["user"] == ME and held["holder"]["uid"] == os.getuid()
    assert held["holder"]["key"] == "K" and held["holder"]["timeout"] == 60
    assert held["holder"]["kind"] == "file" and held["holder"]["grant"] == grant["grant"]
    assert held["holder"]["pool"] == "trio"
    assert abs(held["holder"]["since"] - lab.lock("b1").stat().st_mtime) < 0.01
    assert held["waiters"] == [] and free["waiters"] == []

    assert envelope(mr_info, "info") == [{"board": "b2", "state": "free", "holder": None, "waiters": []}]
    dumped = envelope(dump, "dumpall")
    assert isinstance(dumped, list) and [s["board"] for s in dumped] == ["b1"]

    inventory = envelope(systems, "systems")
    assert set(inventory) == {"systems", "pools"}
    pools = [{"name": "trio", "members": ["b1", "b2", "b3"]}, {"name": "pair", "members": ["b3", "solo"]},
             {"name": "x86", "members": ["x86a", "x86b"]}]
    assert inventory["pools"] == pools
    assert set(inventory["systems"][0]) == {"name", "arch", "sel4_plat", "isa", "soc", "cpu", "cores", "ram",
                                            "max_clk", "num_files", "pxe_linux", "dtb", "pools"}
    x86a = next(s for s in inventory["systems"] if s["name"] == "x86a")
    assert (x86a["num_files"], x86a["cores"], x86a["pxe_linux"], x86a["dtb"], x86a["pools"]) == (2, None, True, False,
                                                                                                ["x86"])

    released = envelope(run_mq(lab, "sem", "-signal", "trio", "-k", "K", "--json"), "released")
    assert released == ["b1"]

    system_tsv, pool_tsv, features, cancelled = run_all(
        lab, ("system-tsv", "--json"), ("pool-tsv", "--json"), ("features", "--json"),
        ("sem", "-cancel", "b1", "-k", "K", "--json"))
    assert envelope(system_tsv, "system-tsv") == inventory["systems"]  # one shape for a system everywhere
    assert envelope(pool_tsv, "pool-tsv") == pools
    assert envelope(features, "features")[4] == {"name": "x86a", "pxe_linux": True, "dtb": False}
    assert envelope(cancelled, "cancelled") == {"name": "b1", "key": "K", "count": 0}


@pytest.mark.parametrize(("args", "code", "error"), [
    (("sem", "-info", "nope", "--json"), 1, "UnknownTargetError"),
    (("sem", "-signal", "b1", "-k", "K", "--json"), 3, "NotHolderError"),
    (("sem", "-wait", "b1", "-T", "-5", "--json"), 5, "BadInputError"),
    (("sem", "-wait", "b1", "--no-such", "--json"), 64, "UsageError"),
])
def test_json_errors_are_an_envelope_too(lab: LabFixture, args: tuple[str, ...], code: int, error: str) -> None:
    """With --json a failure is also one `error` object on stdout; the stderr line stays."""
    proc = run_mq(lab, *args)
    assert proc.returncode == code, proc
    doc = json.loads(proc.stdout)
    assert (doc["mq"], doc["kind"]) == (1, "error")
    assert doc["data"] == {"error": error, "exit_code": code, "message": proc.stderr.strip()[len("mq: "):]}
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("mq: ")


def test_a_lock_taken_over_tells_its_new_holder(lab: LabFixture) -> None:
    run_mq(lab, "sem", "-wait", "b1", "-k", "old", "-T", "1", check=True)
    lock = lab.lock("b1")
    os.utime(lock, (time.time() - 5, time.time() - 5), follow_symlinks=False)
    took = run_mq(lab, "sem", "-wait", "b1", "-k", "new", "--json", check=True)
    assert f"mq: took over b1 from {ME}, whose -T 1 had passed\n" in took.stderr
    assert json.loads(took.stdout)["data"]["took_over"] == {"user": ME, "timeout": 1}


@pytest.mark.parametrize("key", ["ключ", r"C:\new", "ci job #42 (retry)"])
def test_keys_read_back_literally(lab: LabFixture, key: str) -> None:
    """A script reads the key back from -mr-info with `read ... key` and compares."""
    run_mq(lab, "sem", "-wait", "b1", "-k", key, check=True)
    line = run_mq(lab, "sem", "-mr-info", "b1", check=True).stdout.rstrip("\n")
    assert line.split(" ", 6)[6] == key
    assert f"with key '{key}'" in run_mq(lab, "sem", "-info", "b1", check=True).stdout
    run_mq(lab, "sem", "-signal", "b1", "-k", key, check=True)
