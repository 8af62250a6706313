"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (the moto server).

Every ``fault_every``-th request is answered by the proxy itself, alternately with
``503 SlowDown`` and ``500 InternalError``, as S3 does under load; requests whose path contains
one of ``fail_paths`` always get ``500``. Everything else is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_FAULTS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class FaultProxy:
    """Start with :meth:`start` (returns the endpoint URL), stop with :meth:`stop`.

    Attributes:
        requests: requests received.
        faults: requests answered with a fault.
    """

    def __init__(self, upstream: str, *, fault_every: int = 0, fail_paths: Sequence[str] = ()):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.fault_every = fault_every
        self.fail_paths = tuple(fail_paths)
        self.requests = 0
        self.faults = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; returns ``http://127.0.0.1:PORT``."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _fault_for(self, path: str) -> tuple[int, str, str] | None:
        with self._lock:
            self.requests += 1
            if any(p in path for p in self.fail_paths):
                fault = _FAULTS[1]
            elif self.fault_every and self.requests % self.fault_every == 0:
                fault = _FAULTS[(self.requests // self.fault_every) % 2]
            else:
                return None
            self.faults += 1
            return fault

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Answer one request: a fault, or the upstream's response."""
        body = _read_body(request)
        fault = self._fault_for(request.path)
        if fault is not None:
            status, code, message = fault
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>"
            ).encode()
            _reply(request, status, [("Content-Type", "application/xml")], xml)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        conn.request(request.command, request.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
        length = response.getheader("Content-Length", "0") if request.command == "HEAD" else None
        conn.close()
        _reply(request, response.status, kept, data, length)


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    return request.rfile.read(int(request.headers.get("Content-Length") or 0))


def _reply(
    request: BaseHTTPRequestHandler,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    length: str | None = None,
) -> None:
    """Send a response; ``length`` overrides Content-Length (a HEAD reply has no body)."""
    request.send_response(status)
    for key, value in headers:
        request.send_header(key, value)
    request.send_header("Content-Length", length if length is not None else str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)
