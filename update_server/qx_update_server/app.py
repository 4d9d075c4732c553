"""The HTTP service: the public static repository, the authenticated API and the admin page.

``create_app`` only composes; each area is a router module of :mod:`qx_update_server.api`:

* :mod:`.api.public`   — ``/healthz``, ``/targets/…`` (static), ``/admin`` and its files;
* :mod:`.api.releases` — ``/v1/releases…`` and ``/v1/uploads…`` (list, publish, promote, yank, remove, rollout);
* :mod:`.api.keys`     — ``/v1/keys/…``;
* :mod:`.api.fleet`    — ``/v1/checkin``, ``/v1/fleet``, ``/v1/audit``;
* :mod:`.api.tokens`   — ``/v1/tokens…`` (list, create, revoke; scope ``tokens``);
* :mod:`.api.guards`   — authentication (deny by default), scopes and body limits before any body byte is
  read, the public/admin listener split, security headers;
* :mod:`.api.errors`   — the one error shape ``{"error", "field", "hint"}`` for every response, statuses
  from the errors' classes (:mod:`qx_update_server.errors`).

Tokens are managed by ``qx-update-server token …`` on the server machine, or over HTTP by a token with
the ``tokens`` scope (:mod:`.api.tokens`: it grants at most its own scopes).

Middleware order, outermost first: ``MetadataFastPath`` (``GET /metadata/…`` from memory, the path every
host polls; :mod:`.serving`'s front answers the plain ones before ASGI, from the same ``MetadataFiles``)
→ ``ListenerSplit`` (with ``--admin-listen``) → ``SecurityHeaders`` → ``AuthMiddleware`` → the routers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from qx_common import log
from qx_common.errors import QxError
from qx_update_server.api import errors, fleet, keys, public, releases, rootkeys, tokens
from qx_update_server.api.deps import Services
from qx_update_server.api.guards import AuthMiddleware, ListenerSplit, SecurityHeaders, is_public, route_scope
from qx_update_server.metadata_http import MetadataFastPath, MetadataFiles
from qx_update_server.repository import Repository
from qx_update_server.staging import Staging
from qx_update_server.storage import open_storage

__all__ = ["DEFAULT_MAX_UPLOAD", "ROUTERS", "create_app", "is_public", "route_scope"]

_log = log.get("update_server.app")

DEFAULT_MAX_UPLOAD = 4 << 30  # per file; a root payload is ~0.5 GiB today
# Every route of the app, by area (tests enumerate them; a route outside these would escape those tests).
ROUTERS = (public.router, releases.router, keys.router, rootkeys.router, fleet.router, tokens.router)


def create_app(data_dir: Path, *, database: str | None = None, root_keys_dir: Path | None = None,
               max_upload: int = DEFAULT_MAX_UPLOAD, refresh_interval: float = 600.0,
               admin_address: tuple[str, int | None] | None = None) -> FastAPI:
    """The service. ``admin_address``: ``scope["server"]`` of requests from a separate admin listener
    (see ListenerSplit; under :mod:`.serving` the backend Unix socket's ``(path, None)``)."""
    repo = Repository(data_dir, root_keys_dir=root_keys_dir)
    storage = open_storage(data_dir, database)
    staging = Staging(data_dir)
    repo.repair()
    repo.metadata_dir.mkdir(parents=True, exist_ok=True)
    repo.targets_dir.mkdir(parents=True, exist_ok=True)

    async def resigner() -> None:
        """Re-sign timestamp/snapshot/targets before they expire, for as long as the server runs."""
        while True:
            try:
                await asyncio.to_thread(staging.clean)
                if repo.initialized():
                    roles = await asyncio.to_thread(repo.refresh)
                    if roles:
                        await asyncio.to_thread(storage.audit, "server", "resign", {"roles": roles})
            except QxError as e:
                _log.error("re-signing failed: %s", e.message)
            await asyncio.sleep(refresh_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(resigner())
        yield
        task.cancel()
        storage.close()
        staging.close()

    app = FastAPI(title="qx-update-server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.services = Services(repo=repo, storage=storage, staging=staging, max_upload=max_upload)
    app.state.repo = repo
    app.state.storage = storage
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    public.mount_static(app, repo.targets_dir)
    app.add_middleware(AuthMiddleware, storage=storage)
    app.add_middleware(SecurityHeaders)
    if admin_address is not None:
        app.add_middleware(ListenerSplit, admin_address=admin_address)
    # Outermost: the metadata hosts poll is answered before auth and routing (it is public anyway).
    # serving.serve's front answers the same files itself (one cache); requests with a query string,
    # escapes, or pipelined behind an API request on the same connection come here.
    app.state.metadata_files = MetadataFiles(repo.metadata_dir)
    app.add_middleware(MetadataFastPath, files=app.state.metadata_files)
    return app
