"""Routes: read-only views of the host for its operator — the state of the host's services
(``GET /v1/host/services``) and the API certificate's fingerprint (``GET /v1/host/certificate``).
Neither takes input; both answer 200 even where the host cannot tell (no systemd as PID 1, no
certificate file), with ``reason`` saying why. Logic in :mod:`qx_node.hostservices`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from qx_common import hostpaths
from qx_node import hostservices
from qx_node.node import Node

router = APIRouter(prefix="/v1/host", tags=["host"])


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("/services", summary="State of the host's services (systemctl show); 'unknown' with the reason "
                                 "where systemd cannot tell")
async def get_services() -> dict[str, Any]:
    return await run_in_threadpool(hostservices.services)


@router.get("/certificate", summary="The API certificate's SHA-256 fingerprint, to compare with the browser's")
def get_certificate(request: Request) -> dict[str, Any]:
    return hostservices.cert_fingerprint(_node(request).settings.tls_dir / hostpaths.NODE_CERT_NAME)
