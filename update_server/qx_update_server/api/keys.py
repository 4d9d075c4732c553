"""Signing keys: ``/v1/keys/init`` and ``/v1/keys/rotate`` (scope ``keys``), ``/v1/keys/status`` (``read``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import need
from qx_update_server.storage import Token

router = APIRouter(prefix="/v1/keys")


class KeysInitBody(BaseModel):
    root_keys: int = Field(1, ge=1, le=16)
    threshold: int = Field(1, ge=1, le=16)


@router.post("/init")
def keys_init(body: KeysInitBody, svc: Svc, token: Annotated[Token, Depends(need("keys"))]) -> dict[str, Any]:
    svc.repo.init(root_keys=body.root_keys, threshold=body.threshold)
    svc.storage.audit(token.name, "keys-init", body.model_dump(), token.id)
    return svc.repo.key_status()


@router.post("/rotate")
def keys_rotate(svc: Svc, token: Annotated[Token, Depends(need("keys"))]) -> dict[str, Any]:
    version = svc.repo.rotate()
    svc.storage.audit(token.name, "keys-rotate", {"root_version": version}, token.id)
    return svc.repo.key_status()


@router.get("/status")
def keys_status(svc: Svc, _: Annotated[Token, Depends(need("read"))]) -> dict[str, Any]:
    if not svc.repo.initialized():
        return {"initialized": False, "roles": {}}
    return {"initialized": True} | svc.repo.key_status()
