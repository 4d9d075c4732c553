"""Run the API under uvicorn with TLS (the certificate is created on first start).

Stopping: SIGTERM (``systemctl stop``) is a graceful stop — open requests and SSE streams get up to
3 s — and the process then exits 0; SIGINT (Ctrl-C) exits 130. Running VMs are never touched.
"""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from qx_common import log
from qx_node.api import create_app
from qx_node.node import Node
from qx_node.settings import Settings
from qx_node.tls import ensure_cert

_log = log.get("node")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # While serving, uvicorn handles SIGTERM itself (graceful shutdown) and afterwards re-raises it
    # to the handler it replaced: this one. A requested stop is then exit 0, not death by signal.
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    key, cert = ensure_cert(settings.tls_dir)
    node = Node(settings)
    _log.info("qx-node: https://%s:%d (libvirt %s, pool %s)", settings.host, settings.port,
              settings.libvirt_uri, settings.pool_dir)
    uvicorn.run(create_app(node), host=settings.host, port=settings.port, ssl_keyfile=str(key),
                ssl_certfile=str(cert), log_level="warning", access_log=False,
                # SSE streams would otherwise hold a restart for long; VMs are not affected either way.
                timeout_graceful_shutdown=3)
