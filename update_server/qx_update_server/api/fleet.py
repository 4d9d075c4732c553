"""Hosts: check-ins (scope ``checkin``), the fleet list and the audit log (scope ``read``).

Check-in identity: a token made with ``--host`` reports only that host; a host key
(``X-Quantix-Host-Key``, the host's own secret) is bound to the host id at its first check-in and must
match from then on. A refused check-in writes nothing and is audited (``checkin-refused``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import need
from qx_update_server.contract import CHANNELS
from qx_update_server.errors import Forbidden, RequestError
from qx_update_server.storage import FLEET_PAGE, FLEET_PAGE_MAX, HEALTH, MIN_HOST_KEY, HostIdentityError, Token

HOST_KEY_HEADER = "X-Quantix-Host-Key"
_HOST_KEY = re.compile(rf"[A-Za-z0-9_-]{{{MIN_HOST_KEY},256}}")

router = APIRouter(prefix="/v1")


class CheckinBody(BaseModel):
    host_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    version: str = Field(max_length=64)
    slot: str = Field(pattern=r"^[ab]$")
    channel: str = Field(pattern="^(" + "|".join(CHANNELS) + ")$")
    health: str = Field(pattern="^(" + "|".join(HEALTH) + ")$")
    last_error: str | None = Field(None, max_length=4000)


@router.post("/checkin", status_code=204)
def checkin(body: CheckinBody, request: Request, svc: Svc,
            token: Annotated[Token, Depends(need("checkin"))]) -> None:
    host_key = request.headers.get(HOST_KEY_HEADER)
    if host_key is not None and not _HOST_KEY.fullmatch(host_key):
        raise RequestError(f"{HOST_KEY_HEADER}: must be {MIN_HOST_KEY}-256 characters of A-Z a-z 0-9 _ -",
                           field=HOST_KEY_HEADER, hint="qx-update makes one at random; send it unchanged")
    problem = None
    if token.host_id is not None and token.host_id != body.host_id:
        problem = f"this token may report only host {token.host_id}, not {body.host_id}"
    else:
        try:
            svc.storage.checkin(body.model_dump(), host_key=host_key, token_id=token.id)
        except HostIdentityError as e:
            problem = str(e)
    if problem:
        svc.storage.audit(token.name, "checkin-refused", {"host_id": body.host_id, "reason": problem}, token.id)
        raise Forbidden(problem, field="host_id",
                        hint="a host reports only itself; a reinstalled host is re-enrolled with "
                             "qx-update-server host forget HOST_ID")


@router.get("/fleet")
def fleet(svc: Svc, _: Annotated[Token, Depends(need("read"))], limit: int = FLEET_PAGE,
          after: str | None = None) -> dict[str, Any]:
    """One page of hosts in host_id order; ``next`` is the ``after`` of the next page (null at the end).

    The first page (no ``after``) also carries ``summary``: totals by health and version.
    """
    if not 1 <= limit <= FLEET_PAGE_MAX:
        raise RequestError(f"limit: {limit} must be from 1 to {FLEET_PAGE_MAX}", field="limit")
    hosts = svc.storage.fleet(limit + 1, after)
    out: dict[str, Any] = {"hosts": hosts[:limit], "next": hosts[limit - 1]["host_id"] if len(hosts) > limit else None}
    if after is None:
        out["summary"] = svc.storage.fleet_summary()
    return out


@router.get("/audit")
def audit(svc: Svc, _: Annotated[Token, Depends(need("read"))], limit: int = 100) -> dict[str, Any]:
    return {"entries": svc.storage.audit_log(min(max(limit, 1), 1000))}
