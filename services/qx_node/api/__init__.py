"""The qx-node HTTP API (FastAPI). ``create_app(node)`` builds it around a :class:`~qx_node.node.Node`.

Every route except ``GET /health`` is behind :class:`~qx_node.auth.BearerAuth` (an ASGI
middleware wrapping the whole app, HTTP and WebSocket alike, so new routes are covered
automatically). Around and inside it, for every route (``api/guards.py``): :class:`CatchAll` (a bug
is a logged 500 that keeps the connection), :class:`BodyLimit` (1 MiB JSON bodies, refused before
reading) and ``reject_unknown_query`` (a mistyped query parameter is a 422). Responses are
:class:`~qx_node.api.errors.SafeJSONResponse`. The app's lifespan starts the node (libvirt
connection) and closes it — closing never touches running VMs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from qx_common.version import product_version
from qx_node.api import (console, errors, events, host, hostctl, hostinfo, networks, openapi, storage, tasks, ui,
                         updates, vms)
from qx_node.api.guards import BodyLimit, CatchAll, reject_unknown_query
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
                  default_response_class=errors.SafeJSONResponse,
                  dependencies=[Depends(reject_unknown_query)],
                  description="The API of one Quantix OS host. Authenticate with "
                              "`Authorization: Bearer <token>` (the node's api-token file); "
                              "only GET /health is public. Every error is "
                              '`{"error": str, "field": str|null, "hint": str|null}`.')
    app.state.node = node
    errors.install(app)
    for r in (host.router, hostctl.router, hostinfo.router, vms.router, console.router, storage.router, tasks.router,
              networks.router, updates.router,
              events.router):
        app.include_router(r)
    # Innermost first: the body limit, then authentication, then the last-resort handler outside both.
    app.add_middleware(BodyLimit, limit=errors.MAX_JSON_BODY, is_upload=storage.is_upload)
    web = ui.WebClient(node)  # the browser client: its files and sign-in (UiFront), its sessions (BearerAuth)
    app.state.web = web  # the token rotation ends the sessions signed in with the old token
    app.add_middleware(BearerAuth, token=node.api_token, admit=node.tickets.admit, session=web.check)
    app.add_middleware(ui.UiFront, web=web)
    app.add_middleware(CatchAll)
    openapi.install(app)
    return app
