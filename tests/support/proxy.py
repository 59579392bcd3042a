"""A TCP proxy on loopback in front of a local server (the S3 one), for tests that need the
traffic held or slowed at a known point; subclasses say what happens to the bytes."""

from __future__ import annotations

import contextlib
import socket
import threading


class LoopbackProxy:
    """Listens on a free 127.0.0.1 port and connects each client to `upstream_port`; each
    direction is pumped by `_pump` in its own thread. `close()` ends it all."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            for source, sink, towards_upstream in (
                (client, upstream, True),
                (upstream, client, False),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, towards_upstream), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, towards_upstream: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
