"""The ``hybridstore serve`` command: the store over HTTP."""

from __future__ import annotations

import click

from ..config import (
    is_http_url,
)
from ..factory import open_repository
from .group import (
    Context,
    cli,
    fail,
    pass_context,
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="TCP port."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="API tokens, one 'ROLE TOKEN' a line (roles: admin, worker)."
    " Default: $HYBRIDSTORE_API_TOKENS ('ROLE:TOKEN,ROLE:TOKEN').",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="uvicorn worker processes (on PostgreSQL, or a data directory: both are safe).",
)
@pass_context
def serve(context: Context, host: str, port: int, token_file: str | None, workers: int) -> None:
    """Serve the store over HTTP to remote workers (tokens required; TLS: use a proxy)."""
    from ..tokens import load_tokens

    tokens = load_tokens(token_file)  # none configured: one line, exit 1
    target = context.resolved()
    if is_http_url(target):
        fail("serve needs a data directory or a postgresql:// URL, not another server")
    try:
        from ..httpapi import serve as run_server
    except ImportError as exc:
        fail(f"serve needs the http extra (pip install 'hybridstore[http]'): {exc}")
    open_repository(target).close()  # create or check the store before listening
    level = click.get_current_context().find_root().params.get("log_level") or "warning"
    run_server(
        target,
        tokens,
        host=host,
        port=port,
        token_file=token_file,
        workers=workers,
        # uvicorn's access log is at info: shown unless only errors are asked for.
        log_level=level if level in ("debug", "error", "critical") else "info",
    )
