"""Run the API under uvicorn with TLS (the certificate is created on first start)."""

from __future__ import annotations

import uvicorn

from qx_common import log
from qx_node.api import create_app
from qx_node.node import Node
from qx_node.settings import Settings
from qx_node.tls import ensure_cert

_log = log.get("node")


def serve(settings: Settings) -> None:
    key, cert = ensure_cert(settings.tls_dir)
    node = Node(settings)
    _log.info("qx-node: https://%s:%d (libvirt %s, pool %s)", settings.host, settings.port,
              settings.libvirt_uri, settings.pool_dir)
    uvicorn.run(create_app(node), host=settings.host, port=settings.port, ssl_keyfile=str(key),
                ssl_certfile=str(cert), log_level="warning", access_log=False,
                # SSE streams would otherwise hold a restart for long; VMs are not affected either way.
                timeout_graceful_shutdown=3)
