"""`apa-fleet gateway`: the HTTP gateway under uvicorn (configuration checked first)."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.checks import ConfigError, fail
from cli import reuse_port
from cli.context import checked_settings
from cli.ports import check_port_free


def gateway(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default APA_GATEWAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default APA_GATEWAY_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP gateway: signed LMS submissions in, score history out (no torch in this process)."""
    cfg = checked_settings(schema=True)
    try:  # one line naming the setting, not uvicorn's traceback
        check_port_free(host or cfg.gateway_host, port or cfg.gateway_port,
                        how_to_change="--port" if port else "APA_GATEWAY_PORT")
    except ConfigError as exc:
        fail(exc)
    import uvicorn

    from api_gateway.app import create_app

    options = {"host": host or cfg.gateway_host, "port": port or cfg.gateway_port, "log_level": log_level,
               "proxy_headers": True}
    if cfg.gateway_workers > 1 and reuse_port.SUPPORTED:
        # Several processes (issue 10), each with its own socket (cli/reuse_port.py) and its app
        # built from the same APA_* environment. uvicorn picks httptools and uvloop when installed
        # (`uvicorn[standard]`, a base dependency).
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config("api_gateway.app:create_app", factory=True, workers=cfg.gateway_workers, **options)
        listener = reuse_port.ReusePortListener(options["host"], options["port"])
        Multiprocess(config, sockets=[listener]).run()
    elif cfg.gateway_workers > 1:  # no SO_REUSEPORT (Windows): uvicorn's shared socket
        uvicorn.run("api_gateway.app:create_app", factory=True, workers=cfg.gateway_workers, **options)
    else:
        uvicorn.run(create_app(cfg), **options)
