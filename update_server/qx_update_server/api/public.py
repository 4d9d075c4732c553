"""Public routes (no token): the health check, the static repository hosts read, and the admin page.

``/metadata/…`` is answered before routing by :class:`~qx_update_server.metadata_http.MetadataFastPath`;
``/targets/…`` and the admin page's own files are static mounts added by :func:`mount_static`.
The admin page has no data of its own: it asks for a token and calls the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from qx_update_server.api.deps import Svc
from qx_update_server.api.guards import ADMIN_HEADERS

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/healthz")
def healthz(svc: Svc) -> dict[str, Any]:
    return {"ok": True, "initialized": svc.repo.initialized()}


@router.get("/admin")
def admin() -> FileResponse:
    return FileResponse(STATIC / "admin.html", media_type="text/html", headers=ADMIN_HEADERS)


def mount_static(app: FastAPI, targets_dir: Path) -> None:
    app.mount("/targets", StaticFiles(directory=targets_dir, check_dir=False), name="targets")
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static")
