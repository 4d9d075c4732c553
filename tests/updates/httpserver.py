"""A real static HTTP server on 127.0.0.1 with ``Range`` support (stdlib's handler has none).

Every request is recorded (path, Range header, status) so tests can prove that a download resumed.
"""

from __future__ import annotations


import re
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Pacer:
    """One link of ``bits_per_s`` shared by all connections: each block books the next free slot of the
    link's timeline and waits for it (a 20 ms burst is let through early, as a NIC queue would)."""

    BURST = 0.02

    def __init__(self, bits_per_s: float) -> None:
        self.rate = bits_per_s / 8
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + n / self.rate
            wait = self._next - now - self.BURST
        if wait > 0:
            time.sleep(wait)


@dataclass
class Served:
    base: Path
    url: str
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    # Answer one request per connection, then close it on the next request without an answer (no
    # "Connection: close" was sent): a server whose keep-alive timer fired just as the client reused it.
    drop_keepalive: bool = False
    connections: int = 0
    # A paced link (bench/update.py): every body byte of every connection goes through one token bucket.
    pacer: Pacer | None = None

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def serve(base: Path) -> Served:
    served = Served(base, "")

    class Handler(SimpleHTTPRequestHandler):
        # Keep-alive, as nginx or a CDN: qx-update's chunk fetcher reuses its connections.
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes: with Nagle's algorithm each small response waits
        # for the client's delayed ACK (~40 ms), which real servers (nginx: tcp_nodelay) do not do.
        disable_nagle_algorithm = True

        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            served.connections += 1  # one handler per connection
            super().__init__(*a, directory=str(base), **kw)

        answered = False

        def handle_one_request(self) -> None:
            if served.drop_keepalive and self.answered:
                # The race a client loses with a keep-alive timer: its next request arrives, the server
                # has given up on the connection and closes it without an answer.
                self.rfile.readline(65537)
                self.close_connection = True
                return
            super().handle_one_request()
            self.answered = True

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = Path(self.translate_path(self.path))
            rng = self.headers.get("Range")
            if not path.is_file():
                served.requests.append((self.path, rng, 404))
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end = 0, size - 1
            status = 200
            if rng:
                m = _RANGE.match(rng)
                if not m or int(m.group(1)) >= size:
                    served.requests.append((self.path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                status = 206
            served.requests.append((self.path, rng, status))
            self.send_response(status)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            with path.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                try:
                    while left:
                        block = f.read(min(64 << 10 if served.pacer else 1 << 20, left))
                        if not block:
                            break
                        if served.pacer:
                            served.pacer.take(len(block))
                        self.wfile.write(block)
                        left -= len(block)
                except (BrokenPipeError, ConnectionResetError):
                    pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    served.server = srv
    served.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    return served



