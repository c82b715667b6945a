"""The ``hybridstore serve`` command: the store over HTTP."""

from __future__ import annotations

import click

from ..config import (
    is_http_url,
)
from .group import (
    Context,
    cli,
    fail,
    opened,
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
    # The store must exist already (hybridstore init / db init): a typo in a path must
    # not start a server on a new, empty store.
    with opened(target, *context.given()):
        pass
    _check_address(host, port)
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


def _check_address(host: str, port: int) -> None:
    """One line and exit 1, before anything is printed, if the address cannot be bound
    (in use, or not an address of this machine)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
