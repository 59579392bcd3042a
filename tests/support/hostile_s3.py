"""S3 as an attacker with write access to the bucket can shape it.

AWS S3 stores any UTF-8 key: `pfx/ID/../../x`, `pfx/ID//tmp/x`. SeaweedFS (the real S3 server
of the tests) refuses or normalises such keys, so this proxy in front of it adds them: bucket
listings get the extra keys, and GET/HEAD of an extra key is answered here. Every other
request goes to weed unchanged (its signature stays valid: the Host header is forwarded).
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urlsplit

_HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length", "expect"}


class HostileS3Proxy:
    """Serves `extra` ({key: body}) in `bucket` on top of the S3 server at `upstream`."""

    def __init__(self, upstream: str, bucket: str, extra: dict[str, bytes]) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.bucket = bucket
        self.extra = extra
        self.served: list[str] = []  # extra keys somebody downloaded
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: HostileS3Proxy

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _handle(self, send_body: bool) -> None:
        path, _, query = self.path.partition("?")
        prefix = f"/{self.owner.bucket}/"
        key = unquote(path)[len(prefix) :] if unquote(path).startswith(prefix) else None
        if key is not None and key in self.owner.extra:
            self.owner.served.append(key)
            self._serve_object(self.owner.extra[key], send_body)
            return
        status, headers, body = self._forward()
        if path.rstrip("/") == f"/{self.owner.bucket}" and "list-type=2" in query:
            body = self._with_extra_keys(body)
        self._reply(status, headers, body, send_body)

    def _forward(self) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            body = response.read()
            return response.status, response.getheaders(), body
        finally:
            conn.close()

    def _with_extra_keys(self, body: bytes) -> bytes:
        url_encoded = b"<EncodingType>url</EncodingType>" in body
        listed = [key for key in self.owner.extra if "\x00" not in key]
        entries = "".join(
            f"<Contents><Key>{_xml(quote(key, safe='/') if url_encoded else key)}</Key>"
            f"<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
            f'<ETag>"{hashlib.md5(data).hexdigest()}"</ETag>'  # noqa: S324 - S3's ETag
            f"<Size>{len(data)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for key in listed
            for data in [self.owner.extra[key]]
        )
        return body.replace(b"</ListBucketResult>", entries.encode() + b"</ListBucketResult>")

    def _serve_object(self, data: bytes, send_body: bool) -> None:
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", f'"{hashlib.md5(data).hexdigest()}"'),  # noqa: S324 - S3's ETag
            ("Last-Modified", formatdate(usegmt=True)),
            ("Accept-Ranges", "bytes"),
        ]
        self._reply(200, headers, data, send_body, length=len(data))

    def _reply(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        send_body: bool,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        upstream_length = None
        for name, value in headers:
            if name.lower() == "content-length":
                upstream_length = value
            elif name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if send_body:
            self.send_header("Content-Length", str(len(body)))
        else:  # HEAD: the length of the object that a GET would return
            self.send_header(
                "Content-Length", str(length if length is not None else upstream_length or 0)
            )
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
