"""Releases: list, publish (three calls), promote, yank, remove, rollout — each with its scope.

Publishing is three calls so large files stream with a progress bar and a size limit:
``POST /v1/uploads`` → ``PUT /v1/uploads/{id}/{file}`` (each release file) →
``POST /v1/uploads/{id}/publish``. The server verifies manifest + SHA256SUMS + bytes before signing
(:func:`qx_update_server.release.load`, then :meth:`~qx_update_server.repository.Repository.publish`).
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from qx_update_server import contract, release
from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import need
from qx_update_server.contract import CHANNELS
from qx_update_server.errors import PayloadTooLarge, RequestError
from qx_update_server.staging import WRITE_BATCH, Sink
from qx_update_server.storage import Token

router = APIRouter(prefix="/v1")


class PublishBody(BaseModel):
    channel: str = "dev"
    notes: str = Field("", max_length=contract.MAX_NOTES_BYTES)  # in bytes: checked again by repo.publish


class PromoteBody(BaseModel):
    to: str


class RolloutBody(BaseModel):
    percent: float | None = Field(None, ge=0, le=100)
    paused: bool | None = None


@router.get("/releases")
def list_releases(svc: Svc, _: Annotated[Token, Depends(need("read"))]) -> dict[str, Any]:
    repo = svc.repo
    if not repo.initialized():
        return {"initialized": False, "releases": [], "channels": list(CHANNELS)}
    records = svc.storage.release_records()
    out = []
    for r in repo.releases():
        rec = records.get(r["version"], {})
        out.append(r | {"published_by": rec.get("published_by"), "published_at": rec.get("published_at")})
    # Releases that left the signed set (retention or remove): no host sees them; listed for the record.
    retired = [{"version": v} | r for v, r in sorted(repo.retired().items(), key=lambda kv: kv[1]["at"],
                                                      reverse=True)[:100]]
    return {"initialized": True, "releases": out, "channels": list(CHANNELS), "retired": retired}


@router.post("/uploads")
def new_upload(svc: Svc, _: Annotated[Token, Depends(need("publish"))]) -> dict[str, Any]:
    return {"upload_id": svc.staging.new(), "max_file_size": svc.max_upload}


@router.put("/uploads/{upload_id}/{filename}")
async def upload_file(upload_id: str, filename: str, request: Request, svc: Svc,
                      _: Annotated[Token, Depends(need("publish"))]) -> dict[str, Any]:
    """Stream the body to ``.<file>.part`` (size-limited), fsync, rename; disk I/O runs in threads.

    The event loop only collects chunks; every open/write/fsync/rename happens in a worker thread
    (``anyio.to_thread``), buffered to ~1 MiB per call so a slow disk never stalls the loop that
    also serves metadata to hosts.
    """
    d = svc.staging.dir(upload_id)
    release.check_filename(filename)
    declared = request.headers.get("content-length")
    limit = release.upload_limit(filename, svc.max_upload)
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(f"Content-Length: {declared!r} is not a byte count", field="Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"{filename}: {declared} bytes is over the limit of {limit}", field="filename",
                                  hint="artifacts are limited by the server's --max-upload")
    sink = await anyio.to_thread.run_sync(Sink, d, filename)
    try:
        buf: list[bytes] = []
        buffered = 0
        async for chunk in request.stream():
            if sink.size + buffered + len(chunk) > limit:
                raise PayloadTooLarge(f"{filename}: over the limit of {limit} bytes", field="filename",
                                      hint="artifacts are limited by the server's --max-upload")
            buf.append(chunk)
            buffered += len(chunk)
            if buffered >= WRITE_BATCH:
                await anyio.to_thread.run_sync(sink.write, b"".join(buf))
                buf, buffered = [], 0
        if buf:
            await anyio.to_thread.run_sync(sink.write, b"".join(buf))
        if declared is not None and sink.size != int(declared):
            raise RequestError(f"{filename}: got {sink.size} bytes, Content-Length said {declared}",
                               field="Content-Length")
        await anyio.to_thread.run_sync(sink.commit)
    finally:
        await anyio.to_thread.run_sync(sink.discard)
    return {"file": filename, "size": sink.size}


@router.post("/uploads/{upload_id}/publish")
def publish(upload_id: str, body: PublishBody, svc: Svc,
            token: Annotated[Token, Depends(need("publish"))]) -> dict[str, Any]:
    d = svc.staging.dir(upload_id)
    try:
        rel = release.load([d])
        svc.repo.publish(rel, channel=body.channel, notes=body.notes, move=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    svc.storage.record_release(rel.version, token.name, rel.manifest)
    svc.storage.audit(token.name, "publish", {"version": rel.version, "channel": body.channel}, token.id)
    return next(r for r in svc.repo.releases() if r["version"] == rel.version)


@router.post("/releases/{version}/promote")
def promote(version: str, body: PromoteBody, svc: Svc,
            token: Annotated[Token, Depends(need("promote"))]) -> dict[str, Any]:
    out = svc.repo.promote(version, to=body.to)
    svc.storage.audit(token.name, "promote", {"version": version, "to": body.to}, token.id)
    return out


@router.post("/releases/{version}/yank")
def yank(version: str, svc: Svc, token: Annotated[Token, Depends(need("yank"))]) -> dict[str, Any]:
    out = svc.repo.yank(version)
    svc.storage.audit(token.name, "yank", {"version": version}, token.id)
    return out


@router.post("/releases/{version}/remove")
def remove(version: str, svc: Svc, token: Annotated[Token, Depends(need("yank"))]) -> dict[str, Any]:
    """Take a release out of the signed targets for good (its version is never published again)."""
    out = svc.repo.remove(version)
    svc.storage.audit(token.name, "remove", {"version": version}, token.id)
    return out


@router.post("/releases/{version}/rollout")
def rollout(version: str, body: RolloutBody, svc: Svc,
            token: Annotated[Token, Depends(need("rollout"))]) -> dict[str, Any]:
    out = svc.repo.rollout(version, percent=body.percent, paused=body.paused)
    svc.storage.audit(token.name, "rollout", body.model_dump() | {"version": version}, token.id)
    return out
