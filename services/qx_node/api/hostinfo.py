"""Routes: the host's services (``GET /v1/host/services``), the API certificate's fingerprint
(``GET /v1/host/certificate``), the journal (``GET /v1/host/journal``, :mod:`qx_node.journal`) and the API token's rotation (``POST /v1/host/api-token/rotate``).

The two reads take no input and answer 200 even where the host cannot tell (no systemd as PID 1, no
certificate file), with ``reason`` saying why; logic in :mod:`qx_node.hostservices`. The rotation
(refused with 423 in lockdown mode, like every change of the host) writes a new token, answers it once
(``Cache-Control: no-store``; it is never logged), refuses the old one from then on and ends the web
sessions signed in with a token — except the caller's own session, when the page asked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_common import hostpaths, log
from qx_node import hostservices, journal
from qx_node.api.errors import SafeJSONResponse
from qx_node.lockdown import refuse_changes_while_locked
from qx_node.node import Node
from qx_node.websession import COOKIE

router = APIRouter(prefix="/v1/host", tags=["host"])
_log = log.get("node.host")


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("/services", summary="State of the host's services (systemctl show); 'unknown' with the reason "
                                 "where systemd cannot tell")
async def get_services() -> dict[str, Any]:
    return await run_in_threadpool(hostservices.services)


@router.get("/journal", summary="The host's journal, newest last: filter by unit, priority (0..7 or name; this "
                                "and more urgent), grep (PCRE), since (ISO 8601); at most 1000 entries")
async def get_journal(unit: str | None = None, priority: str | None = None, grep: str | None = None,
                      since: str | None = None, lines: str | None = None) -> dict[str, Any]:
    q = journal.parse_query(unit, priority, grep, since, lines)
    return await run_in_threadpool(journal.read, q)


@router.get("/certificate", summary="The API certificate's SHA-256 fingerprint, to compare with the browser's")
def get_certificate(request: Request) -> dict[str, Any]:
    return hostservices.cert_fingerprint(_node(request).settings.tls_dir / hostpaths.NODE_CERT_NAME)


@router.post("/api-token/rotate", summary="Make a new API token, answered once; the old one stops working at once",
             dependencies=[Depends(refuse_changes_while_locked)], response_model=None)
async def rotate_token(request: Request) -> JSONResponse:
    node = _node(request)
    new = await run_in_threadpool(node.api_token.rotate)
    ended = request.app.state.web.sessions.end_token_sessions(keep=request.cookies.get(COOKIE, ""))
    _log.warning("host: API token rotated through the API (%d token session(s) ended)", ended)
    node.bus.publish({"type": "host", "action": "API token rotation"})
    return SafeJSONResponse({"token": new, "ended_sessions": ended}, headers={"Cache-Control": "no-store"})
