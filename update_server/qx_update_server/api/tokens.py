"""API tokens over HTTP: list, create, revoke — scope ``tokens``; the same store as ``qx-update-server token``.

Rules (docs/update-format.md section 2.2):

* **Scope.** Every route needs ``tokens``. Creating a token also needs *every scope it grants*: a
  token can never make a token more powerful than itself (``tokens`` alone makes only ``tokens``
  tokens; to hand out ``keys`` the caller must hold ``keys``). Revoking needs only ``tokens`` — any
  token, so a leaked one can be ended from the admin page at once.
* **Secrets.** A token's secret is in the answer to its ``POST /v1/tokens`` only (``Cache-Control:
  no-store``); the store keeps its hash. Listing answers id, name, scopes, created, expires,
  last_used, revoked and host_id — never the secret nor its hash.
* **Audit.** ``token-create`` and ``token-revoke`` entries name the acting token (``token_id``) and the
  token created or revoked (``detail.token``).
* **Revocation is immediate for new requests**: every request looks its token up in the store
  (:meth:`~qx_update_server.storage.Storage.lookup_token`), so a request that arrives after the
  revoke's answer gets 401 on every server process sharing the store. A request already past
  authentication when the revoke commits finishes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from qx_common.errors import UserError
from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import need
from qx_update_server.errors import Forbidden, NotFound, RequestError
from qx_update_server.storage import SCOPES, TOKEN_ID_LEN, TOKEN_NAME, Token

router = APIRouter(prefix="/v1/tokens")

_ID = rf"^tok_[0-9a-f]{{{TOKEN_ID_LEN}}}$"


class TokenCreateBody(BaseModel):
    name: str = Field(max_length=64)  # TOKEN_NAME, checked by the route (its look-ahead is not pydantic's)
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))
    expires_days: float | None = Field(None, gt=0, le=3650)
    host_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@router.get("")
def list_tokens(svc: Svc, _: Annotated[Token, Depends(need("tokens"))]) -> dict[str, Any]:
    return {"tokens": svc.storage.list_tokens(), "scopes": list(SCOPES)}


@router.post("", status_code=201)
def create_token(body: TokenCreateBody, response: Response, svc: Svc,
                 token: Annotated[Token, Depends(need("tokens"))]) -> dict[str, Any]:
    if not TOKEN_NAME.fullmatch(body.name):
        raise RequestError(f"name: {body.name!r} is not a token name", field="name",
                           hint="1-64 letters, digits, '.', '_', '-', not starting with tok_ (e.g. ci-publish)")
    unknown = [s for s in body.scopes if s not in SCOPES]
    if unknown:
        raise RequestError(f"scopes: unknown scope {unknown[0]!r}", field="scopes",
                           hint=f"choose from: {', '.join(SCOPES)}")
    beyond = sorted(set(body.scopes) - token.scopes)
    if beyond:
        raise Forbidden(f"scopes: this token may not grant {', '.join(beyond)} (it does not hold them)",
                        field="scopes", hint="a token creates tokens with at most its own scopes; ask an "
                                             "administrator, or use qx-update-server token create on the server")
    try:
        secret = svc.storage.create_token(body.name, body.scopes, expires_days=body.expires_days,
                                          host_id=body.host_id)
    except UserError as e:  # the store's checks: a name in use, --host without only checkin
        field = "host_id" if "--host" in e.message else "name"
        raise RequestError(e.message.replace("--host: ", "host_id: ").replace("--name: ", "name: "),
                           field=field, hint=e.hint) from e
    row = next(t for t in svc.storage.list_tokens() if t["name"] == body.name and not t["revoked"])
    svc.storage.audit(token.name, "token-create", {"token": row["id"], "name": row["name"], "scopes": row["scopes"],
                                                   "expires": row["expires"], "host_id": row["host_id"]}, token.id)
    response.headers["Cache-Control"] = "no-store"  # the secret is in this answer only
    return row | {"token": secret}


@router.post("/{token_id}/revoke")
def revoke_token(token_id: str, svc: Svc, token: Annotated[Token, Depends(need("tokens"))]) -> dict[str, Any]:
    if not re.fullmatch(_ID, token_id):
        raise NotFound(f"token {token_id[:40]!r}: not a token id", field="token_id",
                       hint="token ids look like tok_0123456789ab (GET /v1/tokens lists them)")
    try:
        row = svc.storage.revoke_token(token_id)
    except UserError as e:
        known = next((t for t in svc.storage.list_tokens() if t["id"] == token_id), None)
        if known is None:
            raise NotFound(f"token {token_id}: no such token", field="token_id",
                           hint="GET /v1/tokens lists them") from e
        raise RequestError(f"token {token_id}: revoked already at {known['revoked']}", field="token_id",
                           hint="nothing to do: it is refused on every request") from e
    svc.storage.audit(token.name, "token-revoke", {"token": row["id"], "name": row["name"]}, token.id)
    return row
