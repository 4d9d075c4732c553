"""Route: /v1/events — server-sent events of VM lifecycle changes and libvirt connection state.

The stream starts with a ``snapshot`` event (every VM and its state), then carries ``lifecycle``,
``connection``, ``restart-on-crash``, ``task`` (``{"task": <the task as GET /v1/tasks/{id}>}`` when a
task starts, progresses and ends), ``maintenance``, ``host`` (reboot/shutdown asked) and ``stats`` (a sample
of the host's rates as ``GET /v1/host/metrics/history`` keeps it: ``t``, ``cpu``, ``mem``, ``disk``, ``net``,
``load``; one per 5 s) events as JSON in ``data:`` lines, with ``id:`` set to the event's sequence number.
A comment line every 15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from qx_common.errors import QxError
from qx_node.events import STOP
from qx_node.node import Node

router = APIRouter(tags=["events"])
KEEPALIVE = 15.0


def _frame(event: dict[str, Any]) -> str:
    eid = f"id: {event['seq']}\n" if "seq" in event else ""
    return f"{eid}event: {event['type']}\ndata: {json.dumps(event, sort_keys=True)}\n\n"


@router.get("/v1/events", summary="Server-sent events (text/event-stream)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request) -> StreamingResponse:
    node: Node = request.app.state.node
    sid, queue = node.bus.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            try:
                vms = await run_in_threadpool(node.vms.list)
                snap = {"type": "snapshot", "vms": [{"name": v["name"], "state": v["state"]} for v in vms]}
            except QxError as e:
                snap = {"type": "snapshot", "vms": None, "error": e.message}
            yield "retry: 2000\n\n" + _frame(snap)
            while not node.bus.stopping:
                try:
                    ev = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keepalive\n\n"
                    continue
                if ev is STOP:
                    return
                yield _frame(ev)
        finally:
            node.bus.unsubscribe(sid)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
