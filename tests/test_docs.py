"""The man page and shell completions are generated from the CLI: fail on drift."""

from __future__ import annotations

import os
import subprocess
import sys

from mq.cli.docs import ROOT, generated


def test_committed_docs_match_the_cli() -> None:
    stale = [str(path.relative_to(ROOT)) for path, text in generated().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"regenerate with `python3 -m mq.cli.docs`: {stale}"


def test_man_page_documents_every_command() -> None:
    text = (ROOT / "man" / "mq.1").read_text()
    for command in ("mq sem", "mq run", "mq systems", "mq system\\-tsv", "mq pool\\-tsv", "mq features"):
        assert f".SS {command}" in text


def test_bash_completion_offers_systems_and_pools(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = ROOT / "completions" / "mq.bash"
    env = {**lab.env, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    shim = tmp_path / "mq"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m mq \"$@\"\n")
    shim.chmod(0o755)
    out = subprocess.run(["bash", "-c", f"source {script}; COMP_WORDS=(mq sem -info b); COMP_CWORD=3; "
                          "_mq_completion mq; echo \"${COMPREPLY[@]}\""], env=env, capture_output=True, text=True,
                         timeout=30).stdout.split()
    assert out == ["b1", "b2", "b3"]
