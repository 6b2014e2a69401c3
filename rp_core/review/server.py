"""Serve the review app on 127.0.0.1 (a free port unless one is asked for) with uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"


def bind(port: int = 0) -> socket.socket:
    """A listening socket on the loopback address (port 0: one the system picks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {HOST}:{port} ({exc.strerror})") from None
    sock.listen(64)
    return sock


def serve(app: Any, sock: socket.socket, on_ready: Callable[[], None] | None = None) -> None:
    """Run until interrupted (Ctrl-C, SIGTERM), answering on `sock`; returns once the server has stopped."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if on_ready is not None and self.started:
                on_ready()

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C: that is the normal way out
        pass
