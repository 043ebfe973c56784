#!/usr/bin/env python3
"""Hand-run SSH latency figures for mq against bare ``ssh true``.

Not part of CI. Run as root from the repository (mq installed, editable is fine)::

    python3 benchmarks/ssh_latency.py              # about 3 minutes
    python3 benchmarks/ssh_latency.py --runs 5 --children 2   # about 1 minute

It starts its own OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``, with the
test users of ``tests/conftest.py``: mqalice logs in), a shared lab
directory with board b1, and measures in the same run:

1. wall time (median, min, max over ``--runs`` runs, interleaved round-robin
   so drift hits every variant alike) of

   * bare ``ssh -F CFG labhost true`` (no ControlMaster)
   * ``mq sem -info b1``, paramiko transport
   * ``mq sem -info b1``, OpenSSH transport, no ControlMaster
   * bare ``ssh true`` through a warm ControlMaster
   * ``mq sem -info b1``, OpenSSH transport through the same warm ControlMaster
   * bare ``ssh true`` forced to ``KexAlgorithms curve25519-sha256``: what
     paramiko negotiates (OpenSSH >= 9.0 prefers sntrup761x25519, which costs
     far more CPU), so the paramiko ratio can be read against both baselines

2. connections per command: ``Accepted publickey`` lines in the sshd log
   (new logins), and ``Starting session`` lines (sessions: one per command,
   also for sessions multiplexed over a ControlMaster, which log no new login).
3. ratios against the bare ``ssh`` baselines, next to mq.sh's figures.
4. where the paramiko path spends its time: interpreter and import costs, and
   connect / exec / bootstrap / hello measured in fresh processes with the
   internals of ``mq.transport.paramiko_ssh`` (what ``ParamikoTransport``
   does), plus a manual paramiko sequence splitting key exchange from auth,
   and the critical path inside one real ``mq sem -info`` process (when the
   background connect thread starts and ends, when the CLI first needs it).
5. what-ifs: the same probe with one change monkeypatched into its own
   process (``gc.freeze()`` before exit; paramiko's import of ``invoke``
   blocked), to size candidate fixes without touching ``src/``.

``python`` below is ``sys.executable`` (the real interpreter, not a pyenv
shim), as the mq runs use ``sys.executable -m mq``. Every Python child gets
``PYTHONPYCACHEPREFIX`` (a temp dir) and no ``PYTHONDONTWRITEBYTECODE``, so
compiled bytecode is cached as on a normal install (an editable checkout under
``PYTHONDONTWRITEBYTECODE=1`` recompiles mq on every run; one line shows that
cost) without writing anything into the source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _prereqs import mq_source_path, ssh_bench_ready

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SRC_PATH = mq_source_path()  # "" when installed; else children get it on PYTHONPATH

PYTHON = sys.executable
USER = "mqalice"
BOARD = "b1"
ALIAS = "labhost"

TARGET_PARAMIKO_RATIO = 1.5
# mq.sh figures quoted in the issue
MQSH_CONNECTIONS = 5
MQSH_RATIO = 5.4
MQSH_CM_MS = 78.0
MQSH_CM_BARE_MS = 7.0

# Runs the real CLI (``mq sem -info b1``) with timestamps around
# ``mq.transport.open_transport`` and the background connect thread
# (``mq.transport._Early``, when the tree has it): argv = spawn time (CLOCK_MONOTONIC, as
# time.monotonic in the parent), output JSON path, what-if flags ("freeze",
# "noinvoke": monkeypatches in this process only). Kept tiny: no extra imports.
CLI_PROBE = """
import sys, time, json
T0, OUT, FLAGS = float(sys.argv[1]), sys.argv[2], sys.argv[3]
marks = {"interpreter up": time.monotonic() - T0}
if "noinvoke" in FLAGS:
    sys.modules["invoke"] = None  # paramiko.config then skips invoke (only 'Match exec' needs it)
import mq.transport as tr
open0 = tr.open_transport
def open_transport(config):
    marks["CLI asks for the connection"] = time.monotonic() - T0
    try:
        return open0(config)
    finally:
        marks["connection in hand"] = time.monotonic() - T0
tr.open_transport = open_transport  # before mq.client.service imports it by name
if hasattr(tr, "_Early"):  # the background connect started before typer is imported
    run0 = tr._Early._run
    def run(self):
        marks["connect thread starts"] = time.monotonic() - T0
        try:
            run0(self)
        finally:
            marks["connect thread done"] = time.monotonic() - T0
    tr._Early._run = run
from mq.cli.main import main
try:
    code = main(["sem", "-info", "b1"])
finally:
    marks["command done"] = time.monotonic() - T0
    with open(OUT, "w") as f:
        json.dump(marks, f)
if "freeze" in FLAGS:
    import gc
    gc.disable()
    gc.freeze()  # nothing left for the collector at interpreter shutdown
sys.exit(code)
"""


# --------------------------------------------------------------------------------------------
# child mode: one fresh process = what one CLI invocation pays
# --------------------------------------------------------------------------------------------
class Phases:
    """Named wall-clock phases of one iteration, in order."""

    def __init__(self, initial: dict[str, float] | None = None) -> None:
        self.times: dict[str, float] = dict(initial or {})
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        """Close the phase that began at the previous mark (or creation)."""
        now = time.perf_counter()
        self.times[name] = now - self._last
        self._last = now


def _phase_child(mode: str, repeat: int) -> None:
    """Run the paramiko path ``repeat`` times in this process; print one JSON list of phase dicts."""
    first = Phases()
    import paramiko

    first.mark("import paramiko")
    from mq.transport import paramiko_ssh  # noqa: F401  (and what it imports: config, bundle, remote, base)

    first.mark("import mq transport modules")
    results = []
    for index in range(repeat):
        phases = Phases(first.times if index == 0 else None)
        info = _mq_iteration(phases) if mode == "mq" else _kex_iteration(phases, paramiko)
        results.append({"phases": phases.times, "info": info})
    print(json.dumps(results))


def _settings(phases: Phases) -> tuple[Any, Any, str, str]:
    """(config, HostSettings, ssh config path, remote command), as ParamikoTransport.__init__ gets them."""
    from mq.settings.config import load_config
    from mq.transport.bundle import remote_command
    from mq.transport.sshconfig import config_file, resolve

    config = load_config()
    path = config_file(config)
    phases.mark("load_config")
    command = remote_command(config.base, None if config.lab_is_default else config.lab)
    phases.mark("remote_command (engine digest)")
    settings = resolve(config.host_name, path, config.host_user)
    phases.mark("resolve (ssh config)")
    return config, settings, path, command


def _mq_iteration(phases: Phases) -> dict[str, str]:
    """ParamikoTransport.__init__ step by step, then one ``info`` call and close."""
    from mq.transport import paramiko_ssh as ps
    from mq.transport.base import AgentClient
    from mq.transport.remote import _bootstrap_state

    config, settings, path, command = _settings(phases)
    chain: list[Any] = []
    sock = ps._socket(settings, path, chain)
    phases.mark("_socket (TCP connect)")
    client = ps._connect(settings, sock, chain)
    phases.mark("_connect (known_hosts+kex+auth)")
    channel = client.get_transport().open_session()
    channel.exec_command(command)
    phases.mark("open_session+exec_command")
    agent = AgentClient(ps.ChannelStream(channel), config.host, settings.alive_interval)
    state = _bootstrap_state(agent)
    assert state == "ready", state
    phases.mark("bootstrap (host python3 up)")
    agent.start()
    phases.mark("hello (agent import+reply)")
    agent.call("info", name=BOARD)
    phases.mark("call info")
    agent.close()
    for item in reversed(chain):
        item.close()
    phases.mark("close")
    return {}


def _kex_iteration(phases: Phases, paramiko: Any) -> dict[str, str]:
    """The same connection by hand, to split key exchange from authentication."""
    import logging
    import socket

    from mq.transport import paramiko_ssh as ps

    agreed: list[str] = []

    class _KexName(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Kex: "):
                agreed.append(message[5:])

    logger = logging.getLogger("paramiko.transport")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_KexName())
    _, settings, _, _ = _settings(phases)
    sock = socket.create_connection((settings.hostname, settings.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    phases.mark("TCP connect")
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=10)
    phases.mark("banner+kex (start_client)")
    ps._client(settings)
    phases.mark("load known_hosts (_client)")
    key = paramiko.PKey.from_path(settings.identity_files[0])
    phases.mark("load private key")
    transport.auth_publickey(settings.user, key)
    phases.mark("auth_publickey")
    chan = transport.open_session()
    chan.exec_command("true")
    chan.recv_exit_status()
    phases.mark("exec 'true' round trip")
    info = {"kex": agreed[-1] if agreed else "?",
            "cipher": str(transport.remote_cipher), "mac": str(transport.remote_mac),
            "hostkey": str(transport.host_key_type)}
    transport.close()
    phases.mark("close")
    return info


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
LOGIN_RE = re.compile(r"Accepted publickey")
SESSION_RE = re.compile(r"Starting session:")


@dataclass
class Series:
    name: str
    argv: list[str]
    env: dict[str, str]
    expect: str = ""
    times: list[float] = field(default_factory=list)
    logins: int = 0
    sessions: int = 0

    def run(self) -> float:
        start = time.perf_counter()
        proc = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or not proc.stdout.startswith(self.expect):
            raise RuntimeError(f"{self.name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return elapsed


def log_counts(log: Path) -> tuple[int, int]:
    text = log.read_text(errors="replace")
    return len(LOGIN_RE.findall(text)), len(SESSION_RE.findall(text))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def stats_line(name: str, times: Sequence[float], extra: str = "") -> str:
    return (f"  {name:<46} median {ms(statistics.median(times))} ms   min {ms(min(times))}   "
            f"max {ms(max(times))}{extra}")


def time_commands(commands: Sequence[tuple[str, list[str], dict[str, str]]], runs: int) -> None:
    """Time each (name, argv, env) ``runs`` times, round-robin after one warm-up round; print one line each."""
    series = [Series(name=name, argv=argv, env=env) for name, argv, env in commands]
    for index in range(runs + 1):
        for s in series:
            elapsed = s.run()
            if index:
                s.times.append(elapsed)
    for s in series:
        print(stats_line(s.name, s.times))


def interleave(series: list[Series], runs: int, log: Path, warmup: int = 2) -> None:
    for _ in range(warmup):
        for s in series:
            s.run()
    for _ in range(runs):
        for s in series:
            before = log_counts(log)
            s.times.append(s.run())
            after = log_counts(log)
            s.logins += after[0] - before[0]
            s.sessions += after[1] - before[1]


def child_phases(mode: str, env: dict[str, str], children: int, repeat: int) -> tuple[list[dict[str, float]],
                                                                                         list[dict[str, float]],
                                                                                         dict[str, str]]:
    """(cold iterations, warm iterations, negotiated info) over ``children`` fresh processes."""
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    info: dict[str, str] = {}
    for _ in range(children):
        out = subprocess.run([PYTHON, str(Path(__file__).resolve()), "--phase-child", mode, "--repeat", str(repeat)],
                             env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"phase child failed:\n{out.stderr}")
        results = json.loads(out.stdout)
        cold.append(results[0]["phases"])
        warm.extend(r["phases"] for r in results[1:])
        info = results[0]["info"] or info
    return cold, warm, info


def print_phases(title: str, cold: list[dict[str, float]], warm: list[dict[str, float]]) -> float:
    print(f"   {title}")
    print("   (median ms; cold = first iteration in a fresh process, warm = later ones in the same process)")
    print(f"    {'phase':<40} {'cold':>8} {'warm':>8}")
    total_cold = total_warm = 0.0
    for name in cold[0]:
        c = statistics.median(p[name] for p in cold)
        w_values = [p[name] for p in warm if name in p]
        w = statistics.median(w_values) if w_values else None
        total_cold += c
        total_warm += w or 0.0
        print(f"    {name:<40} {ms(c):>8} {ms(w) if w is not None else '      -':>8}")
    print(f"    {'sum':<40} {ms(total_cold):>8} {ms(total_warm):>8}")
    return total_cold


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def cli_probe(env: dict[str, str], runs: int, workdir: Path, flags: str = "") -> list[dict[str, float]]:
    """Timestamps (s after spawn) inside ``runs`` real ``mq sem -info`` processes, plus total wall."""
    return [probe_once(env, workdir, flags) for _ in range(runs + 1)][1:]  # the first warms caches


def probe_once(env: dict[str, str], workdir: Path, flags: str = "") -> dict[str, float]:
    """One probed ``mq sem -info`` process: its marks and ``process exit`` (total wall)."""
    out = workdir / "probe.json"
    start = time.monotonic()
    proc = subprocess.run([PYTHON, "-c", CLI_PROBE, repr(start), str(out), flags or "-"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    total = time.monotonic() - start
    if proc.returncode != 0 or not proc.stdout.startswith(f"Lock for {BOARD}"):
        raise RuntimeError(f"CLI probe failed: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    marks: dict[str, float] = json.loads(out.read_text())
    marks["process exit"] = total
    return marks


def print_probe(title: str, results: list[dict[str, float]]) -> None:
    print(f"   {title}  (median ms after spawn)")
    names = [n for n in results[0] if all(n in r for r in results)]
    names.sort(key=lambda n: statistics.median(r[n] for r in results))
    for name in names:
        print(f"     {name:<38} {ms(statistics.median(r[name] for r in results))}")
    waited = statistics.median(r["connection in hand"] - r["CLI asks for the connection"] for r in results)
    call = statistics.median(r["command done"] - r["connection in hand"] for r in results)
    shutdown = statistics.median(r["process exit"] - r["command done"] for r in results)
    if "connect thread starts" in names:
        connect = statistics.median(r["connect thread done"] - r["connect thread starts"] for r in results)
        print(f"     => connect thread ran {ms(connect)} ms; the CLI then waited {ms(waited)} ms for it;")
    else:
        print(f"     => the CLI connected in the foreground: {ms(waited)} ms;")
    print(f"        call+output+close {ms(call)} ms; interpreter shutdown {ms(shutdown)} ms")


@dataclass
class Bench:
    """The loopback sshd, client configs and environments of one benchmark run."""

    args: argparse.Namespace
    sshd: Any
    lab_base: Path
    client_dir: Path
    cfg: Path
    cm_cfg: Path
    base_env: dict[str, str]
    mq_toml: Path

    def mq_env(self, ssh_cfg: Path, openssh: bool) -> dict[str, str]:
        env = dict(self.base_env, MQ_HOST=ALIAS, MQ_BASE=str(self.lab_base), MQ_SSH_CONFIG=str(ssh_cfg))
        if openssh:
            env["MQ_CONFIG"] = str(self.mq_toml)
        return env

    def ssh(self, cfg: Path, *command: str, options: Sequence[str] = ()) -> list[str]:
        return ["ssh", "-F", str(cfg), *options, ALIAS, *command]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per variant (default 15)")
    parser.add_argument("--children", type=int, default=8, help="fresh processes for the phase breakdown")
    parser.add_argument("--phase-child", choices=("mq", "kex"), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase_child:
        _phase_child(args.phase_child, args.repeat)
        return 0

    if not ssh_bench_ready():
        return 2
    import conftest
    from sshd import client_config, start_sshd

    root = Path("/tmp") / f"mq-bench-sshd-{os.getpid()}"
    client_dir = Path(tempfile.mkdtemp(prefix="mqb-"))  # short: ControlPath must fit a unix socket name
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MQ_", "SSH_", "XDG_")) and k != "PYTHONDONTWRITEBYTECODE"}
    base_env.update(HOME=str(client_dir), PYTHONPYCACHEPREFIX=str(client_dir / "pycache"))
    if SRC_PATH:
        base_env["PYTHONPATH"] = SRC_PATH
    sshd = start_sshd(root, conftest.TEST_USERS)
    cm_cfg: Path | None = None
    try:
        lab = conftest.make_lab(root / "lab", shared=True)
        known = client_dir / "known_hosts"
        known.write_text(sshd.known_hosts_line() + "\n")
        cfg = client_config(sshd, USER, client_dir / "config", known_hosts=known)
        cm_cfg = client_config(sshd, USER, client_dir / "config_cm", known_hosts=known,
                               extra=f"  ControlMaster auto\n  ControlPath {client_dir}/cm-%r@%h:%p\n"
                                     "  ControlPersist 60\n")
        mq_toml = client_dir / "mq-openssh.toml"
        mq_toml.write_text('transport = "openssh"\n')
        bench = Bench(args=args, sshd=sshd, lab_base=lab.base, client_dir=client_dir, cfg=cfg, cm_cfg=cm_cfg,
                      base_env=base_env, mq_toml=mq_toml)
        print(f"mq SSH latency benchmark: sshd on 127.0.0.1:{sshd.port}, user {USER}, lab {lab.base}")
        ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        print(f"python {PYTHON} ({sys.version.split()[0]}), {ssh_version}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{os.cpu_count()} CPUs, load average {load} at start")
        series = measure(bench)
        report_ratios(series)
        breakdown(bench)
        what_if(bench, series)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nload average {load} at end")
        return 0
    finally:
        if cm_cfg is not None:
            subprocess.run(["ssh", "-F", str(cm_cfg), "-O", "exit", ALIAS], env=base_env, capture_output=True,
                           check=False)
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(client_dir, ignore_errors=True)


def measure(bench: Bench) -> dict[str, Series]:
    """Sections 1 and 2: wall times and sshd logins/sessions per command."""
    runs = bench.args.runs
    mq_argv = [PYTHON, "-m", "mq", "sem", "-info", BOARD]
    expect = f"Lock for {BOARD}"
    series = {
        "bare": Series("bare ssh true", bench.ssh(bench.cfg, "true"), bench.base_env),
        "bare25519": Series("bare ssh true (kex curve25519-sha256)",
                            bench.ssh(bench.cfg, "true", options=("-o", "KexAlgorithms=curve25519-sha256")),
                            bench.base_env),
        "paramiko": Series("mq sem -info (paramiko)", mq_argv, bench.mq_env(bench.cfg, False), expect),
        "openssh": Series("mq sem -info (openssh)", mq_argv, bench.mq_env(bench.cfg, True), expect),
        "bare_cm": Series("bare ssh true (ControlMaster)", bench.ssh(bench.cm_cfg, "true"), bench.base_env),
        "openssh_cm": Series("mq sem -info (openssh, ControlMaster)", mq_argv, bench.mq_env(bench.cm_cfg, True),
                             expect),
    }
    print(f"{runs} measured runs per variant after 2 warm-up runs each, interleaved round-robin\n")
    before = log_counts(bench.sshd.log)
    Series("warm master", bench.ssh(bench.cm_cfg, "true"), bench.base_env).run()
    logins = log_counts(bench.sshd.log)[0] - before[0]
    check = subprocess.run(bench.ssh(bench.cm_cfg, options=("-O", "check")), env=bench.base_env,
                           capture_output=True, text=True)
    print(f"ControlMaster warmed ({logins} login): {check.stderr.strip()}")
    interleave(list(series.values()), runs, bench.sshd.log)

    print("\n1. Wall time per command")
    for s in series.values():
        print(stats_line(s.name, s.times))
    print("\n2. Connections per command (sshd log deltas over the measured runs)")
    print(f"  {'':<46} {'logins/cmd':>10} {'sessions/cmd':>13}")
    for s in series.values():
        print(f"  {s.name:<46} {s.logins / runs:>10.2f} {s.sessions / runs:>13.2f}")
    print("  logins = 'Accepted publickey' lines (a new SSH connection + auth); sessions = 'Starting session:'"
          "\n  lines. A session multiplexed over the ControlMaster logs no 'Connection from'/'Accepted' line, only"
          "\n  'Starting session: command for mqalice from 127.0.0.1 port <the master's client port> id 0' and"
          "\n  'Close session: ...': the master's one connection (logged once, at warm-up) carries them all.")
    return series


def report_ratios(series: dict[str, Series]) -> None:
    """Section 3."""
    med = {key: statistics.median(s.times) for key, s in series.items()}

    def line(label: str, num: str, den: str, note: str = "") -> None:
        ratio = med[num] / med[den]
        print(f"  {label:<48} {ratio:5.2f}x   ({med[num] * 1000:.0f} ms vs {med[den] * 1000:.0f} ms; "
              f"+{(med[num] - med[den]) * 1000:.0f} ms){note}")

    print("\n3. Ratios (medians)")
    verdict = "meets" if med["paramiko"] / med["bare"] <= TARGET_PARAMIKO_RATIO else "MISSES"
    line("paramiko sem -info / bare ssh true", "paramiko", "bare",
         f"  target <= {TARGET_PARAMIKO_RATIO}x: {verdict}")
    line("paramiko sem -info / bare ssh true (curve25519)", "paramiko", "bare25519")
    line("openssh sem -info / bare ssh true", "openssh", "bare")
    line("openssh+CM sem -info / bare multiplexed ssh true", "openssh_cm", "bare_cm")
    print(f"  mq.sh reference (issue): {MQSH_CONNECTIONS} connections per sem -info = {MQSH_RATIO}x bare ssh;")
    print(f"    through a warm ControlMaster {MQSH_CM_MS:.0f} ms vs bare multiplexed ssh "
          f"{MQSH_CM_BARE_MS:.0f} ms = {MQSH_CM_MS / MQSH_CM_BARE_MS:.1f}x")


def breakdown(bench: Bench) -> None:
    """Section 4: where the time goes."""
    runs = max(5, bench.args.runs)
    env = bench.base_env
    print("\n4. Where the time goes")
    print(" a) local process costs (wall, fresh process each run, round-robin)")
    no_pyc = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}
    no_pyc["PYTHONDONTWRITEBYTECODE"] = "1"
    time_commands([
        ("python -c pass", [PYTHON, "-c", "pass"], env),
        ("python -S -c pass (skips site .pth hooks)", [PYTHON, "-S", "-c", "pass"], env),
        ("python -c 'import paramiko'", [PYTHON, "-c", "import paramiko"], env),
        ("python -c 'import paramiko', invoke blocked",
         [PYTHON, "-c", "import sys; sys.modules['invoke'] = None; import paramiko"], env),
        ("python -c 'import typer' (CLI framework)", [PYTHON, "-c", "import typer"], env),
        ("python -c 'import mq.cli.app'", [PYTHON, "-c", "import mq.cli.app"], env),
        ("python -m mq --version", [PYTHON, "-m", "mq", "--version"], env),
        ("python -m mq --version, no bytecode cache", [PYTHON, "-m", "mq", "--version"], no_pyc),
    ], runs)

    from mq.transport.bundle import engine_zip

    engine_dir = f"/tmp/mq-home-{USER}/.cache/mq/engine-{engine_zip()[0]}"
    agent = f"python3 -c 'import sys; sys.path.insert(0, \"{engine_dir}\"); import mq.engine.host.agent'"
    print(" b) host-side costs: remote python3 start-up and engine import over bare ssh (round-robin)")
    time_commands([
        ("ssh labhost python3 -c pass", bench.ssh(bench.cfg, "python3 -c pass"), env),
        ("ssh labhost python3 -c 'import agent'", bench.ssh(bench.cfg, agent), env),
        ("ssh(CM) labhost true", bench.ssh(bench.cm_cfg, "true"), env),
        ("ssh(CM) labhost python3 -c pass", bench.ssh(bench.cm_cfg, "python3 -c pass"), env),
        ("ssh(CM) python3 -c 'import zipfile,...'",
         bench.ssh(bench.cm_cfg, "python3 -c 'import os,sys,hashlib,io,zipfile,shutil'"), env),
        ("ssh(CM) labhost python3 -c 'import agent'", bench.ssh(bench.cm_cfg, agent), env),
    ], runs)

    print(f" c) critical path inside one real `mq sem -info b1` process ({runs} runs each)")
    for title, cli_env in (("paramiko", bench.mq_env(bench.cfg, False)),
                           ("openssh, no ControlMaster", bench.mq_env(bench.cfg, True)),
                           ("openssh, warm ControlMaster", bench.mq_env(bench.cm_cfg, True))):
        print_probe(title, cli_probe(cli_env, runs, bench.client_dir))

    children = bench.args.children
    print(f" d) paramiko path in-process with mq.transport.paramiko_ssh internals, {children} fresh processes "
          "x 3 iterations")
    env_p = bench.mq_env(bench.cfg, False)
    cold, warm, _ = child_phases("mq", env_p, children, 3)
    print_phases("ParamikoTransport.__init__ + one call, step by step", cold, warm)
    cold, warm, info = child_phases("kex", env_p, children, 3)
    print_phases("the same connection by hand with paramiko (kex vs auth vs session)", cold, warm)
    print(f"    negotiated by paramiko: kex {info.get('kex')}, cipher {info.get('cipher')}, "
          f"mac {info.get('mac')}, host key {info.get('hostkey')}")
    ssh_g = subprocess.run(bench.ssh(bench.cfg, options=("-G",)), capture_output=True, text=True).stdout
    kex = next((line.split(" ", 1)[1] for line in ssh_g.splitlines() if line.startswith("kexalgorithms ")), "?")
    print(f"    OpenSSH client kex preference: {kex.split(',')[0]} (first of {len(kex.split(','))})")


def what_if(bench: Bench, series: dict[str, Series]) -> None:
    """Section 5: the probe with changes monkeypatched into its own process (src/ untouched)."""
    runs = max(5, bench.args.runs)
    para, cm = bench.mq_env(bench.cfg, False), bench.mq_env(bench.cm_cfg, True)
    # (name, environment, probe flags, bare baseline key)
    variants = [("paramiko, as is", para, "", "bare"),
                ("paramiko + gc.freeze() before exit", para, "freeze", "bare"),
                ("paramiko + invoke not imported", para, "noinvoke", "bare"),
                ("paramiko + both", para, "freeze,noinvoke", "bare"),
                ("openssh+CM, as is", cm, "", "bare_cm"),
                ("openssh+CM + gc.freeze() before exit", cm, "freeze", "bare_cm")]
    results: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for index in range(runs + 1):  # round-robin; the first round warms up
        for name, env, flags, _ in variants:
            total = probe_once(env, bench.client_dir, flags)["process exit"]
            if index:
                results[name].append(total)
    print(f"\n5. What-ifs: `mq sem -info b1` wall with one change monkeypatched into the probe process only "
          f"({runs} runs, round-robin; ratio against the matching bare ssh median of section 1)")
    as_is = 0.0
    for name, _, flags, bare_key in variants:
        median = statistics.median(results[name])
        as_is = median if not flags else as_is
        ratio = median / statistics.median(series[bare_key].times)
        print(stats_line(name, results[name], f"   {ratio:5.2f}x" + (f"  ({(median - as_is) * 1000:+.0f} ms)"
                                                                     if flags else "")))

if __name__ == "__main__":
    sys.exit(main())
