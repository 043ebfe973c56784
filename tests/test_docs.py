"""The man page and shell completions are generated from the CLI: fail on drift. The page has
every section a user looks for (EXIT STATUS with every ExitCode, ENVIRONMENT, FILES, EXAMPLES,
INSTALLATION) and renders with groff and man as ASCII, quotes included, with no text lost.
(The completions are driven through real shells in test_completions.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from mq.cli.app import app
from mq.cli.docs import ROOT, generated
from mq.engine.core.errors import ExitCode
from mq.settings.config import _ENV


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


def _section(text: str, name: str) -> str:
    """The roff source of one ``.SH`` section."""
    return text.split(f".SH {name}\n", 1)[1].split("\n.SH ", 1)[0]


def test_man_page_sections() -> None:
    text = (ROOT / "man" / "mq.1").read_text()
    sections = re.findall(r"^\.SH (.+)$", text, re.MULTILINE)
    for name in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES",
                 "EXAMPLES", "INSTALLATION", "SEE ALSO"):
        assert name in sections
    env = _section(text, "ENVIRONMENT")
    for variable in (*_ENV.values(), "MQ_CONFIG", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
                     "_MQ_COMPLETE"):
        assert f".B {variable}\n" in env, variable
    files = _section(text, "FILES")
    for path in ("~/.config/mq/config.toml", "~/.mq", "~/.local/share/mq/", "BASE/NAME.lock", "BASE/.mq/",
                 "inventory\\-HOST\\-BASE.json"):
        assert path in files, path
    examples = _section(text, "EXAMPLES")
    for command in ("mq sem \\-wait", "mq run", "mq sem \\-signal", "mq sem \\-info"):
        assert command in examples, command
    install = _section(text, "INSTALLATION")
    for name in ("mq.bash", "mq.sh.bash", "_mq", "mq.fish", "mq.sh.fish", "man/mq.1", "compinit"):
        assert name in install, name


def test_every_exit_status_is_documented() -> None:
    """Each ExitCode (70 included) is a tagged paragraph of EXIT STATUS, and every code of the
    exit codes page's table is there too."""
    tags = re.findall(r"^\.TP\n\.B (\S+)$", _section((ROOT / "man" / "mq.1").read_text(), "EXIT STATUS"),
                      re.MULTILINE)
    expected = ["128+N" if code == ExitCode.SIGNALLED else str(int(code)) for code in ExitCode]
    assert tags == expected
    assert "70" in tags
    page = (ROOT / "docs" / "exit-codes.md").read_text()
    table = re.findall(r"^\| (\d+(?:\+N)?) \|", page, re.MULTILINE)
    assert table and set(table) <= set(tags)


def test_man_page_roff_source_is_safe() -> None:
    """No control line made of text (a line starting with ' or .), no \\' (an acute accent, not a
    quote): quotes are \\(aq and \\(dq, which print as ASCII."""
    text = (ROOT / "man" / "mq.1").read_text()
    assert "\\'" not in text
    assert "'" not in text  # even inside a line: groff prints a plain ' as a typographic quote in UTF-8
    macros = {"TH", "SH", "SS", "TP", "B", "PP", "RS", "RE", "nf", "fi", "br", "sp", "nh", "ad"}
    for line in text.splitlines():
        if line.startswith("."):
            assert line[1:].split(" ", 1)[0] in macros, line


def _rendered_texts() -> list[str]:
    """Text the page must show in full: every help text, environment and files entry, example."""
    from mq.cli import docs

    texts = [meaning for _, meaning in (*docs.ENVIRONMENT, *docs.FILES)] + list(docs.EXIT_MEANINGS.values())
    texts += [line for _, lines in docs.EXAMPLES for line in lines]
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group, info_name="mq")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        texts += [command.help or ""]
        sub = click.Context(command, info_name=name, parent=ctx)
        declared = docs._declared_help(command)
        texts += [record[1] for param in command.get_params(sub)
                  if (record := docs._help_record(param, declared.get(param.name or ""))) is not None]
    return [text for text in texts if text]


@pytest.mark.parametrize("renderer", ["groff", "man"])
def test_man_page_renders_every_line_with_ascii_quotes(renderer: str) -> None:
    if shutil.which(renderer) is None:
        pytest.skip(f"{renderer} is not installed (.ci/run installs groff-base and man-db)")
    env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MANWIDTH": "100", "MANPAGER": "cat",
           "PAGER": "cat", "MAN_KEEP_FORMATTING": ""}
    argv = (["groff", "-man", "-Tutf8", "-ww", "-P-cbou"] if renderer == "groff"
            else ["man", "--no-hyphenation", "--no-justification", "-l"])
    done = subprocess.run([*argv, str(ROOT / "man" / "mq.1")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # groff -ww: no warning of any kind
    page = re.sub(r".\x08", "", done.stdout)  # overstrike bold/underline, if any
    # no acute accent for ', no curly quotes, no Unicode hyphens:
    assert page.isascii(), sorted({c for c in page if not c.isascii()})
    assert "Lab host ('local' = no SSH)" in page
    flat = " ".join(page.split())
    lost = [text for text in _rendered_texts() if " ".join(text.split()) not in flat]
    assert not lost


# -- the README and the documentation site ------------------------------------------------------
def test_the_samples_in_the_docs_are_what_the_demo_lab_prints() -> None:
    """docs/samples/ are made from the demo lab by tools/docs_samples.py: fail when they drift."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "docs_samples.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    """A newcomer reads it to the end (at most ~200 lines); every relative link names a file."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), f"README links to a missing {target}"
    for heading in ("## Your own lab in five steps", "## Documentation"):
        assert heading in readme


def test_every_docs_page_is_in_the_site() -> None:
    """Each page of docs/ is in mkdocs.yml's nav (the site builds with --strict in CI)."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    missing = [page for page in pages if f": {page}" not in nav]
    assert not missing, f"not in mkdocs.yml's nav: {missing}"


def test_the_site_builds_strictly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With MkDocs installed (``pip install '.[docs]'``; CI builds it in .ci/run too)."""
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).with_name("mkdocs"))
    if not os.path.exists(mkdocs):
        pytest.skip("mkdocs not installed (pip install '.[docs]')")
    proc = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr
