"""``mq import-mqsh``: an mq.sh lab's systems and pools as a lab.toml (``mq.client.mqsh_import``)."""

from __future__ import annotations

from typing import Optional

import typer

from mq.views import render


def import_mqsh(
    directory: str = typer.Argument(..., metavar="DIR", help="The mq.sh lab: a checkout of its scripts, with "
                                                             "scripts/systems/ and scripts/pools/."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="FILE",
                                         help="Write the lab file to FILE (made whole, mode 0644); default: "
                                              "stdout."),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    tftpboot: str = typer.Option("/tftpboot", "--tftpboot", metavar="DIR",
                                 help="Where the lab host keeps each board's reboot script (DIR/NAME/reboot)."),
    shell: str = typer.Option("sh", "--shell", metavar="SHELL",
                              help="The shell that reads the lab's files (bash for files written for it)."),
) -> None:
    """Turn an mq.sh lab into a lab.toml: every system with every attribute, every pool with its members.

    The lab's files are sourced and their functions called in one shell as mq.sh calls them (not
    its unavailable/ folders); values are kept as mq.sh prints them. boot and power_off call the
    lab's own reboot scripts (/tftpboot/NAME/reboot) with the arguments mq.sh's runner gives them. Problems and
    warnings go to stderr, `FILE: FUNCTION: message`: a missing or failing SystemNumFiles or
    Systems function, a file that cannot be sourced or a value lab.toml cannot hold writes nothing
    and exits 6. Put the result in /etc/mq/lab.toml (root's, mode 0644) and check it with mq check.
    """
    from mq import __version__
    from mq.client.mqsh_import import import_lab
    from mq.client.mqsh_toml import check_output, lab_toml, write_lab
    from mq.engine.core.errors import ExitCode

    if output is not None:
        check_output(output, force)  # before the lab is read
    lab = import_lab(directory, tftpboot=tftpboot, shell=shell)
    for finding in lab.findings:
        render.diag(finding.line())
    warned = f" ({len(lab.warnings)} warning{'s' if len(lab.warnings) != 1 else ''})" if lab.warnings else ""
    if lab.errors:
        count = len(lab.errors)
        render.diag(f"{count} problem{'s' if count != 1 else ''} in {lab.directory}: nothing written")
        raise typer.Exit(ExitCode.CONFIG)
    text = lab_toml(lab, __version__, output or "lab.toml")
    done = f"{len(lab.systems)} systems and {len(lab.pools)} pools from {lab.directory}{warned}"
    if output is None:
        render.write_lines(text.splitlines())
        render.diag(f"imported {done}")
    else:
        write_lab(output, text, force)
        render.diag(f"wrote {output}: {done}")
