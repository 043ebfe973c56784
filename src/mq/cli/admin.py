"""``mq admin init`` and ``mq admin load-inventory FILE``: setting up a queue in PostgreSQL."""

from __future__ import annotations

from typing import Any, Optional

import typer

from mq.settings.errors import ConfigError
from mq.views import render

from .state import Globals

admin = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                    help="Set up the PostgreSQL queue (backend = \"postgresql://...\" in the configuration).")


def _backend(ctx: typer.Context, given: Optional[str]) -> str:
    from mq.settings.config import load_config

    if given:
        from mq.settings.backend_string import check

        check(given, "--backend", on_command_line=True)
        return given
    opts: Globals = ctx.find_root().obj or Globals()
    backend = load_config(host=opts.host, base=opts.base).backend
    if not backend:
        raise ConfigError("backend", "", "no PostgreSQL backend configured: set backend = \"postgresql://"
                                         "USER@HOST/DB\" in the config file or MQ_BACKEND, or give --backend")
    return backend


def _connect(backend: str) -> Any:
    from mq.transport.postgres import connect

    return connect(backend)


BACKEND_HELP = "The database (a libpq URI or keywords); default: the configured backend."


@admin.command("init")
def init(ctx: typer.Context, backend: Optional[str] = typer.Option(None, "--backend", help=BACKEND_HELP),
         as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Create or migrate mq's tables in the database (versioned; running it again changes nothing)."""
    from mq.pgengine import schema

    with _connect(_backend(ctx, backend)) as conn:
        before = schema.version(conn)
        try:
            schema.init(conn)
        except schema.Downgrade as exc:
            raise ConfigError("backend", "", str(exc)) from None
        after = schema.version(conn)
        missing = schema.missing_roles(conn)
    if as_json:
        render.out(render.envelope("schema", {"before": before, "version": after, "roles": not missing}))
    render.diag(f"mq: schema already at version {after}" if before == after
                else f"mq: schema version {before or 'none'} -> {after}")
    if missing:
        render.diag(f"mq: note: the roles {' and '.join(missing)} do not exist and this role may not create them "
                    "(CREATEROLE): every client shares the role that owns the tables, and the queue trusts the "
                    "user name each client gives")


def _grant(ctx: typer.Context, backend: Optional[str], role: str, name: str, revoke: bool) -> None:
    from mq.pgengine import schema

    with _connect(_backend(ctx, backend)) as conn:
        try:
            schema.grant(conn, role, name, revoke)
        except schema.GrantError as exc:
            raise ConfigError("backend", "", str(exc)) from None
    render.diag(f"mq: {name} {'is no longer' if revoke else 'is now'} a member of {role}")


NAME_HELP = "A database role (a lab member's own: LOGIN, any authentication)."


@admin.command("grant-user")
def grant_user(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
               revoke: bool = typer.Option(False, "--revoke", help="Take the right away again."),
               backend: Optional[str] = typer.Option(None, "--backend", help=BACKEND_HELP)) -> None:
    """Let database role NAME use the queue (mq_user): wait, release and cancel its own, as itself."""
    from mq.pgengine import schema

    _grant(ctx, backend, schema.USER_ROLE, name, revoke)


@admin.command("grant-admin")
def grant_admin(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
                revoke: bool = typer.Option(False, "--revoke", help="Take the right away again."),
                backend: Optional[str] = typer.Option(None, "--backend", help=BACKEND_HELP)) -> None:
    """Make database role NAME an admin of the queue (mq_admin): -f, offline/online, admin commands,
    any priority."""
    from mq.pgengine import schema

    _grant(ctx, backend, schema.ADMIN_ROLE, name, revoke)


@admin.command("load-inventory")
def load_inventory(ctx: typer.Context,
                   path: str = typer.Argument(..., help="The lab inventory (lab.toml) to store."),
                   backend: Optional[str] = typer.Option(None, "--backend", help=BACKEND_HELP),
                   as_json: bool = typer.Option(False, "--json", help="Versioned JSON output.")) -> None:
    """Check a lab inventory and store it in the database: every client then sees the same
    systems, pools, lab hosts and [queue] policy. Locks and waiters stay as they are."""
    from mq.engine.core.inventory import parse_inventory, read_inventory
    from mq.pgengine import inventory_store, schema

    text = read_inventory(path)
    inventory = parse_inventory(text, path)  # a broken file is refused before anything changes
    with _connect(_backend(ctx, backend)) as conn:
        if schema.version(conn) < schema.VERSION:
            raise ConfigError("backend", "", "the database's mq schema is missing or old: run mq admin init")
        inventory_store.store(conn, inventory, text)
    hosts = sorted({s.host for s in inventory.systems.values() if s.host})
    if as_json:
        render.out(render.envelope("inventory", {"path": path, "systems": len(inventory.systems),
                                                 "pools": len(inventory.pools), "hosts": hosts}))
    render.diag(f"mq: stored {len(inventory.systems)} systems and {len(inventory.pools)} pools from {path}"
                + (f" (lab hosts: {', '.join(hosts)})" if hosts else ""))
