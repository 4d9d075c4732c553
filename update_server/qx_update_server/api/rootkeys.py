"""``POST /v1/keys/root`` (scope ``keys``): serve a root version signed offline (``qx-release keys push-root``).

The body is ``{"root": <root metadata as JSON>}``; the server checks it as a client will — version N+1
of the root it serves, signed by a threshold of root N's root keys and of its own, naming online keys
this server holds — before anything is written (:meth:`Repository.accept_root`). A refusal is a 400
naming ``root`` with the reason; nothing changes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from qx_common.errors import UserError
from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import need
from qx_update_server.errors import RequestError
from qx_update_server.storage import Token

router = APIRouter(prefix="/v1/keys")


class RootBody(BaseModel):
    root: dict[str, Any]


@router.post("/root")
def push_root(body: RootBody, svc: Svc, token: Annotated[Token, Depends(need("keys"))]) -> dict[str, Any]:
    try:
        version = svc.repo.accept_root(json.dumps(body.root).encode())
    except RequestError:
        raise
    except UserError as e:  # the root is refused: say which part of the request is at fault
        raise RequestError(e.message, field="root", hint=e.hint) from e
    svc.storage.audit(token.name, "keys-push-root", {"root_version": version}, token.id)
    return {"initialized": True} | svc.repo.key_status()
