"""The qx-node HTTP API (FastAPI). ``create_app(node)`` builds it around a :class:`~qx_node.node.Node`.

Every route except ``GET /health`` is behind :class:`~qx_node.auth.BearerAuth` (an ASGI
middleware wrapping the whole app, so new routes are covered automatically). The app's lifespan
starts the node (libvirt connection) and closes it — closing never touches running VMs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from qx_common.version import product_version
from qx_node.api import errors, events, host, storage, vms
from qx_node.auth import BearerAuth
from qx_node.node import Node


def create_app(node: Node) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(node.start)
        try:
            yield
        finally:
            await run_in_threadpool(node.close)

    app = FastAPI(title="Quantix OS node API", version=product_version(), lifespan=lifespan,
                  description="The API of one Quantix OS host. Authenticate with "
                              "`Authorization: Bearer <token>` (the node's api-token file); "
                              "only GET /health is public.")
    app.state.node = node
    errors.install(app)
    for r in (host.router, vms.router, storage.router, events.router):
        app.include_router(r)
    app.add_middleware(BearerAuth, token=node.token)
    return app
