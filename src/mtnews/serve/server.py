"""Running the app under uvicorn: on a socket we bind ourselves, in the foreground or in a thread.

Binding first (instead of passing host/port to uvicorn) turns "address in use" into a one-line user error
before the model is loaded, and lets tests and the benchmark bind port 0 and learn the real port without
a race.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from mtnews.errors import MtnewsError


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise MtnewsError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop (TIME_WAIT)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise MtnewsError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _server(app, sock: socket.socket, log_level: str, access_log: bool) -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve_forever(app, sock: socket.socket, log_level: str = "info") -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn installs the signal handlers in the main thread)."""
    _server(app, sock, log_level, access_log=log_level in ("info", "debug")).run(sockets=[sock])


class BackgroundServer:
    """`with BackgroundServer(app) as base_url:` serves `app` on a free loopback port in a thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 start_timeout: float = 30.0):
        self.sock = bind_socket(host, port)
        self.server = _server(app, self.sock, log_level, access_log=False)
        self.start_timeout = start_timeout
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="mtnews-serve", daemon=True)
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server thread did not start")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()

    def __exit__(self, *exc) -> None:
        self.stop()
