"""The qx-node HTTP application (FastAPI). ``create_app(settings)`` is the only entry point."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from qx_common.version import product_version
from qx_node import health
from qx_node.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Quantix OS node API", version=product_version())

    @app.get("/health", tags=["health"])
    async def get_health() -> JSONResponse:
        # The checks block (libvirt, fsync): run them off the event loop, concurrently.
        components = await asyncio.gather(
            asyncio.to_thread(health.check_libvirt, settings.libvirt_uri),
            asyncio.to_thread(health.check_data, settings.state_dir),
            asyncio.to_thread(health.check_console, settings.console_ready_dir),
        )
        body = health.overall(list(components))
        body["version"] = product_version()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return app
