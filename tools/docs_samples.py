#!/usr/bin/env python3
"""Write the sample outputs the documentation shows (``docs/samples/*.txt``) from the built-in
demo lab: run from the source tree, as a new user (an empty home), so they cannot go stale
(``tests/test_docs.py`` runs this and fails on a difference). Only outputs that do not depend on
the clock are samples: the inventory, a board's state, a check.

    python3 tools/docs_samples.py            # rewrite docs/samples/
    python3 tools/docs_samples.py --check    # exit 1 and name the files that differ
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "docs" / "samples"
COMMANDS = {  # file -> the command line after ``mq``
    "systems.txt": ["systems"],
    "sem-info.txt": ["sem", "-info", "sabre"],
    "sem-wait.txt": ["sem", "-wait", "sabre", "-k", "docs"],
    "check.txt": ["check"],
}


def generate() -> dict[Path, str]:
    """Each sample: ``$ mq ...`` and what the command printed (stdout, then stderr), with the
    temporary home written as ``~``."""
    found = {}
    with tempfile.TemporaryDirectory(prefix="mq-docs-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQ_")}
        env.update(HOME=home, MQ_CONFIG=os.devnull, PYTHONPATH=str(ROOT / "src"), COLUMNS="100")
        subprocess.run([sys.executable, "-m", "mq", "systems"], env=env, capture_output=True, check=True)  # made
        for name, args in COMMANDS.items():
            proc = subprocess.run([sys.executable, "-m", "mq", *args], env=env, capture_output=True, text=True,
                                  timeout=60)
            text = f"$ mq {' '.join(args)}\n{proc.stdout}{proc.stderr}".replace(home, "~")
            found[SAMPLES / name] = text
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    differ = []
    for path, text in generate().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                differ.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if differ:
        print("stale: " + ", ".join(differ) + " (run python3 tools/docs_samples.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
