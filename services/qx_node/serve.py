"""Run the API under uvicorn with TLS (the certificate is created on first start).

Stopping: SIGTERM (``systemctl stop``) is a graceful stop: event streams (SSE) are ended at once,
other open requests get up to 3 s, and the process exits 0 — within about 5 s in all, even when
libvirtd hangs (its connection is abandoned, see ``libvirt_conn``; worker threads still stuck in a
libvirt call do not hold the exit). SIGINT (Ctrl-C) exits 130. Running VMs are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from qx_common import hostpaths
from qx_common import log
from qx_common.errors import EnvironmentError_, InternalError
from qx_node.api import create_app
from qx_node.node import Node
from qx_node.settings import Settings

_log = log.get("node")
GRACEFUL_SECONDS = 3
STUCK_THREADS_GRACE = 1.0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # While serving, uvicorn handles SIGTERM itself (graceful shutdown) and afterwards re-raises it
    # to the handler it replaced: this one. A requested stop is then exit 0, not death by signal.
    raise SystemExit(0)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the node when a stop begins (before it waits for open requests)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _leave_stuck_threads(code: int) -> None:
    """Python joins every non-daemon thread at exit; a worker thread blocked in a call to a hung
    libvirtd would hold the process for ever. Give them a moment, then exit without them."""
    deadline = time.monotonic() + STUCK_THREADS_GRACE
    main = threading.main_thread()
    for t in threading.enumerate():
        if t is not main and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
    if stuck:
        _log.warning("qx-node: exiting with %d thread(s) still blocked (%s)", len(stuck), ", ".join(stuck[:5]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def ensure_cert_apart(tls_dir: Path) -> tuple[Path, Path]:
    """``tls.ensure_cert`` in a forked child, so that ``cryptography`` (~8 MiB resident) is never
    loaded into the long-running daemon; its errors come back as they were raised. Called before
    any thread exists."""
    key, cert = tls_dir / hostpaths.NODE_KEY_NAME, tls_dir / hostpaths.NODE_CERT_NAME
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        try:
            from qx_node.tls import ensure_cert

            ensure_cert(tls_dir)
            out: dict[str, str | None] = {}
        except EnvironmentError_ as e:
            out = {"error": e.message, "hint": e.hint}
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
            out = {"bug": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        out = json.loads(data or b'{"bug": "the certificate process died"}')
    except ValueError:
        out = {"bug": "the certificate process answered nonsense"}
    if "error" in out:
        raise EnvironmentError_(str(out["error"]), hint=out.get("hint"))
    if "bug" in out:
        raise InternalError(f"creating the TLS certificate failed: {out['bug']}")
    return key, cert


def serve(settings: Settings) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    key, cert = ensure_cert_apart(settings.tls_dir)
    node = Node(settings)
    _log.info("qx-node: https://%s:%d (libvirt %s, pool %s)", settings.host, settings.port,
              settings.libvirt_uri, settings.pool_dir)
    config = uvicorn.Config(create_app(node), host=settings.host, port=settings.port, ssl_keyfile=str(key),
                            ssl_certfile=str(cert), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    server = _Server(config, node.bus.shutdown)
    code = 0
    try:
        server.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        raise
    finally:
        _leave_stuck_threads(code)
    if not server.started:
        sys.exit(3)  # as uvicorn.run: it could not start (the port is taken, ...), and said why
