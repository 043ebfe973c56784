"""The host agent checks every field of every request, as the CLI checks its options.

A client is not trusted: these tests speak the JSON-lines protocol straight to
``python -m mq.engine.host.agent BASE`` over a pipe (as ``mq`` does over SSH) with
values the CLI would never send, and each must be refused as
``BadInputError`` (exit 5) before anything is made in the lock directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LabFixture, run_mq
from mq.engine.core import arguments, protocol
from mq.engine.core.errors import ExitCode
from mq.engine.host.agent import OPERATIONS
from mq.engine.host.run_host import JobSpec


class RawClient:
    """One agent on a pipe, spoken to line by line; a request's text is sent as written
    (``NaN`` and ``Infinity`` are JSON to Python's parser). An agent that dies on a request
    is reported as the reply (``AgentDied``) and started again for the next one."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.argv = [sys.executable, "-m", "mq.engine.host.agent", str(base)]
        self.env = env
        self.next_id = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def send_raw(self, op: str, args_text: str) -> dict[str, Any]:
        self.next_id += 1
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = f'{{"id": {self.next_id}, "op": "{op}", "args": {args_text}}}\n'
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        while True:
            text = self.proc.stdout.readline()
            if not text:
                _, err = self.proc.communicate(timeout=10)
                self.proc = self._start()
                return {"ok": False, "error": {"type": "AgentDied", "message": err.decode()[-300:]}}
            reply: dict[str, Any] = json.loads(text)
            if reply.get("event") is None:
                assert reply["id"] == self.next_id, reply
                return reply

    def send(self, op: str, **args: Any) -> dict[str, Any]:
        return self.send_raw(op, json.dumps(args))

    def close(self) -> int:
        """End of input: the agent ends (0)."""
        self.proc.communicate(timeout=10)
        return self.proc.returncode


@pytest.fixture
def agent(lab: LabFixture) -> Iterator[RawClient]:
    client = RawClient(lab.base, lab.env)
    hello = client.send("hello", protocol_version=protocol.PROTOCOL, keepalive=15.0, count=3)
    assert hello["ok"], hello
    yield client
    assert client.close() == 0


WAIT = '{"name": "b1", "key": "0", "timeout": 0, "budget": 0, "session": false, "boards": null}'

# (request, its arguments as JSON text): each carries one hostile field, or is missing or
# has one field too many.
HOSTILE = [
    ("check_host", '{"extra": 1}'),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": -5')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": 1e99')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": 1000000000')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": 100000000000000000000000000000')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": "1800"')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": NaN')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": true')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": 1.5')),
    ("wait", WAIT.replace('"timeout": 0', '"timeout": null')),
    ("wait", WAIT.replace('"budget": 0', '"budget": -1')),
    ("wait", WAIT.replace('"budget": 0', '"budget": NaN')),
    ("wait", WAIT.replace('"budget": 0', '"budget": Infinity')),
    ("wait", WAIT.replace('"budget": 0', '"budget": -Infinity')),
    ("wait", WAIT.replace('"budget": 0', '"budget": "5"')),
    ("wait", WAIT.replace('"budget": 0', '"budget": 8e20')),  # -t 99999999999999999999: the host's timers overflow
    ("wait", WAIT.replace('"budget": 0', '"budget": false')),
    ("wait", WAIT.replace('"budget": 0', '"budget": 1e400')),
    ("wait", WAIT.replace('"key": "0"', '"key": ["a"]')),
    ("wait", WAIT.replace('"key": "0"', '"key": 7')),
    ("wait", WAIT.replace('"key": "0"', '"key": ""')),
    ("wait", WAIT.replace('"key": "0"', '"key": "a\\nb"')),
    ("wait", WAIT.replace('"key": "0"', '"key": null')),
    ("wait", WAIT.replace('"name": "b1"', '"name": 5')),
    ("wait", WAIT.replace('"name": "b1"', '"name": ["b1"]')),
    ("wait", WAIT.replace('"session": false', '"session": "yes"')),
    ("wait", WAIT.replace('"session": false', '"session": 1')),
    ("wait", WAIT.replace('"boards": null', '"boards": "b1"')),
    ("wait", WAIT.replace('"boards": null', '"boards": [1]')),
    ("wait", WAIT.replace('"boards": null', '"boards": ["../../etc/b1"]')),
    ("wait", WAIT.replace('"name": "b1", ', '')),
    ("wait", WAIT.replace("}", ', "colour": "red"}')),
    ("cancel", '{"name": "b1", "key": 5}'),
    ("cancel", '{"key": "k"}'),
    ("signal", '{"name": "b1", "key": "0", "force": "true"}'),
    ("signal", '{"name": "b1", "key": "0", "force": 1}'),
    ("info", '{"name": ["b1"]}'),
    ("info", '{}'),
    ("dumpall", '{"order": "random"}'),
    ("dumpall", '{"order": 1}'),
    ("undo_grant", '{"board": "b1", "key": "0", "grant": "1"}'),
    ("undo_grant", '{"board": "b1", "key": "0", "grant": -1}'),
    ("undo_grant", '{"board": "b1", "key": "0", "grant": 1.0}'),
    ("undo_grant", '{"board": "b1", "key": "0", "grant": true}'),
    ("undo_grant", '{"board": "../outside", "key": "0", "grant": 1}'),
    ("undo_grant", '{"board": "b1", "key": "0", "grant": 1, "reason": 3}'),
    ("hello", '{"protocol_version": 1, "keepalive": NaN}'),
    ("hello", '{"protocol_version": 1, "keepalive": -1}'),
    ("hello", '{"protocol_version": 1, "count": "3"}'),
    ("hello", '{"protocol_version": "1"}'),
    ("upload", '{"name": "image", "size": -5}'),
    ("upload", '{"name": "image", "size": 1e99}'),
    ("job_run", '{"target": "b1", "boards": ["b1"], "timeout": NaN}'),
    ("job_run", '{"target": "b1", "boards": "b1"}'),
    ("job_run", '{"target": "b1", "boards": ["b1"], "mode": "evil"}'),
    ("job_run", '{"target": "b1", "boards": ["b1"], "budget": -1}'),
    ("job_run", '{"target": "b1", "boards": ["b1"], "shell": "rm -rf /"}'),
    ("job_run", '{"boards": ["b1"]}'),
    ("inventory", '{"extra": 1}'),
    ("wait", '[1, 2]'),
    ("wait", '"ab"'),
]


def lock_dir_contents(lab: LabFixture) -> list[str]:
    return sorted(os.listdir(lab.base))


def test_hostile_fields_are_refused_and_nothing_is_made(lab: LabFixture, agent: RawClient) -> None:
    before = lock_dir_contents(lab)
    assert before == ["lab.toml"]
    accepted = []
    for op, args_text in HOSTILE:
        reply = agent.send_raw(op, args_text)
        error = reply.get("error") or {}
        if reply.get("ok") or error.get("type") != "BadInputError" or error.get("exit_code") != ExitCode.BAD_INPUT:
            accepted.append((op, args_text, reply))
        else:
            assert "\n" not in error["message"]
    assert not accepted, f"{len(accepted)} of {len(HOSTILE)} not refused:\n" + "\n".join(
        f"{op} {text} -> {reply}" for op, text, reply in accepted)
    assert lock_dir_contents(lab) == before, "a refused request made something in the lock directory"
    # the agent is still serving, and what the CLI sends is accepted
    assert agent.send("info", name="b1")["ok"]
    assert lock_dir_contents(lab) == before


@pytest.mark.parametrize(("timeout", "budget"), [(0, None), (arguments.MAX_LOCK_TIMEOUT, 0), (60, 0.5), (5, 3)])
def test_values_the_cli_sends_are_accepted(lab: LabFixture, agent: RawClient, timeout: int,
                                           budget: float | None) -> None:
    reply = agent.send("wait", name="trio", key="k", timeout=timeout, budget=budget, session=False, boards=None)
    assert reply["ok"], reply
    assert lab.lock(reply["result"]["board"]).read_text() == f"{timeout}\n"
    assert agent.send("signal", name="trio", key="k", force=False)["ok"]


def test_cli_refuses_a_lock_timeout_beyond_the_maximum(lab: LabFixture) -> None:
    proc = run_mq(lab, "sem", "-wait", "b1", "-T", str(arguments.MAX_LOCK_TIMEOUT + 1))
    assert proc.returncode == ExitCode.BAD_INPUT, proc
    assert proc.stderr == "mq: -T 1000000000: out of range (0 to 999999999 seconds)\n"
    assert not lab.held()


def test_an_endless_retry_period_waits_forever_rather_than_being_refused(lab: LabFixture) -> None:
    """``-w inf`` makes an endless budget; the CLI sends it as ``null`` (forever)."""
    proc = run_mq(lab, "sem", "-wait", "b1", "-w", "inf", "-t", "3")
    assert proc.returncode == 0, proc
    assert lab.held() == {"b1"}


def test_every_argument_of_every_request_has_a_check() -> None:
    """A new request argument or ``JobSpec`` field without a check fails here (the agent
    would refuse it at run time)."""
    for name, op in OPERATIONS.items():
        assert set(op.accepted) <= set(arguments.ARGUMENTS), name
    assert {f.name for f in dataclasses.fields(JobSpec)} == set(arguments.JOB_ARGUMENTS)


class JobTalk:
    """A job on ``agent``, spoken to line by line; a watchdog kills the agent after 30 s, so a
    job that never stops fails the test rather than hangs it."""

    def __init__(self, agent: RawClient) -> None:
        self.agent = agent
        assert agent.proc.stdin is not None and agent.proc.stdout is not None
        self.stdin, self.stdout = agent.proc.stdin, agent.proc.stdout
        self.watchdog = threading.Timer(30, agent.proc.kill)
        self.watchdog.start()

    def say(self, *messages: dict[str, Any]) -> None:
        """``messages``, in one write (so the agent reads them together)."""
        self.stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
        self.stdin.flush()

    def job(self, *then: dict[str, Any], **args: Any) -> None:
        """Start a reserve job on b1 with ``args`` (``then``: sent in the same write)."""
        self.agent.next_id += 1
        self.say({"id": self.agent.next_id, "op": "job_run", "args": {
            "target": "b1", "boards": ["b1"], "mode": "reserve", "budget": 0, **args}}, *then)

    def until_board(self) -> None:
        while json.loads(self.stdout.readline()).get("event") != "board":
            pass

    def result(self) -> dict[str, Any]:
        while (reply := json.loads(self.stdout.readline())).get("event"):
            pass
        assert reply["id"] == self.agent.next_id and reply["ok"], reply
        return dict(reply["result"])

    def close(self) -> None:
        self.watchdog.cancel()


@pytest.fixture
def talk(agent: RawClient) -> Iterator[JobTalk]:
    job = JobTalk(agent)
    yield job
    job.close()


def bare_system(mark: Path) -> dict[str, Any]:
    from mq.engine.core.inventory import System

    return dataclasses.asdict(System("b1", power_off=f"touch {mark}"))


def test_a_bare_jobs_lock_lost_message_stops_it_and_hostile_ones_do_no_harm(lab: LabFixture, tmp_path: Path,
                                                                           agent: RawClient, talk: JobTalk) -> None:
    """The PostgreSQL queue's client tells a bare job its lock is gone (``lock_lost``): the job
    stops, powers the board off and says so. A ``lock_lost`` outside a job, or with a
    ``taken_by`` that is not a name, is no request: nothing breaks, nothing is echoed raw."""
    talk.say({"op": "lock_lost", "taken_by": "nobody"})  # no job runs: ignored
    assert agent.send("info", name="b1")["ok"]
    mark = tmp_path / "powered-off"
    talk.job(system=bare_system(mark))
    talk.until_board()
    talk.say({"op": "lock_lost", "taken_by": 5, "extra": [1, 2]})
    result = talk.result()
    assert result["outcome"] == "lock-lost" and result["taken_by"] is None
    assert result["powered_off"] and mark.exists()
    talk.job(system=bare_system(mark))
    talk.until_board()
    talk.say({"op": "lock_lost", "taken_by": "bob\x1b[31m" + "x" * 500})
    taken_by = talk.result()["taken_by"]
    assert "\x1b" not in taken_by and len(taken_by) < 80 and taken_by.startswith("bob\\x1b[31mxxx"), taken_by
    assert lock_dir_contents(lab) == ["lab.toml"]  # a bare job takes and releases nothing here
    assert agent.send("info", name="b1")["ok"]


def test_a_lock_lost_read_with_the_job_request_is_seen_at_once(tmp_path: Path, talk: JobTalk) -> None:
    """Sent right behind ``job_run`` it may come in the same read: the job still sees it at once,
    not at the client's next ping (15 s)."""
    started = time.monotonic()
    talk.job({"op": "lock_lost", "taken_by": "carol"}, system=bare_system(tmp_path / "off"))
    result = talk.result()
    assert result["outcome"] == "lock-lost" and result["taken_by"] == "carol", result
    assert time.monotonic() - started < 5


def test_only_a_bare_job_listens_to_lock_lost(lab: LabFixture, agent: RawClient, talk: JobTalk) -> None:
    """A job whose lock is this host's own: only this host can tell it is lost, the client cannot."""
    talk.job()
    talk.until_board()
    talk.say({"op": "lock_lost", "taken_by": "mallory"})
    assert lab.held() == {"b1"}
    talk.say({"op": "release"})
    assert talk.result()["outcome"] == "detached"
    assert lab.held() == set()
    assert agent.send("info", name="b1")["ok"]


def test_the_client_and_the_host_name_a_lost_lock_alike() -> None:
    """The client side keeps its own copies (it does not load the host's run side)."""
    from mq.cli import run as cli_run
    from mq.engine.core import outcomes
    from mq.engine.host import run_host
    from mq.transport import base

    assert base.LOCK_LOST == cli_run.LOCK_LOST == outcomes.LOCK_LOST
    assert base.LOCK_LOST_OP == run_host.LOCK_LOST
