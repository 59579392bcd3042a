"""A loopback HTTP server that answers one byte at a time: each byte arrives well within any
per-read timeout, the whole answer takes far longer than any request deadline.

It records how many bytes of each answer it managed to send before the client hung up, so a
test asserts that the client gave up early without measuring time."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

ANSWER_BODY = b'{"okay": true, "result": "0x03"}'


def slow_answer(body: bytes = ANSWER_BODY, *, padding_headers: int = 60) -> bytes:
    """A complete HTTP answer whose headers are long enough to trickle for a long time."""
    headers = [b"HTTP/1.1 200 OK", b"content-type: application/json"]
    headers += [f"x-pad-{i}: {'p' * 20}".encode() for i in range(padding_headers)]
    headers.append(f"content-length: {len(body)}".encode())
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@dataclass
class TrickleServer:
    port: int
    answer: bytes
    sent: list[int] = field(default_factory=list)
    """Bytes of the answer sent on each connection before the client went away."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


@contextmanager
def trickle_server(interval_s: float = 0.2, answer: bytes | None = None) -> Iterator[TrickleServer]:
    """Serve `answer` (default: slow_answer()) one byte every `interval_s` to every client."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    server = TrickleServer(listener.getsockname()[1], answer or slow_answer())
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def serve_one(conn: socket.socket) -> None:
        sent = 0
        with conn:
            try:
                _read_request(conn)
                for byte in server.answer:
                    if stop.wait(interval_s):
                        break
                    conn.sendall(bytes([byte]))
                    sent += 1
            except OSError:
                pass  # the client hung up: what we want to see
        server.sent.append(sent)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=serve_one, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        stop.set()
        acceptor.join()
        for worker in workers:
            worker.join()
        listener.close()
