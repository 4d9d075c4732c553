"""Routes: VM consoles — a ticket (``POST /v1/vms/{name}/console``), then the WebSocket proxies
``/v1/vms/{name}/console/vnc`` (noVNC) and ``/v1/vms/{name}/console/serial`` (see ``qx_node.console``).

A WebSocket is refused before it is accepted (HTTP 401/404/409/503 with the JSON error body) when
its ticket (or token) is missing or wrong, the VM does not run or has no such console, or its VNC
server does not answer. Once accepted, bytes flow both ways until either side closes, or the node
stops (the SIGTERM stop does not wait for consoles).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from qx_node.api.errors import SafeJSONResponse
from qx_node.api.vms import VmName
from qx_node.console import Endpoint, Tickets, endpoint
from qx_node.errors import Unavailable
from qx_node.events import STOP
from qx_node.node import Node

router = APIRouter(prefix="/v1/vms", tags=["console"])
Ticket = Annotated[str | None, Query(description="the one-time ticket from POST /v1/vms/{name}/console "
                                                 "(or send the Authorization header)")]
VNC_CONNECT_TIMEOUT = 5.0


@router.post("/{name}/console", status_code=201,
             summary="A one-time ticket (30 s) for the VM's console WebSocket: vnc (noVNC) or serial")
def console_ticket(request: Request, name: VmName,
                   kind: Literal["vnc", "serial"] = Query("vnc", description="which console")) -> JSONResponse:
    node: Node = request.app.state.node
    endpoint(node.vms, name, kind)  # refused now (404, 409) rather than at the handshake
    ticket = node.tickets.issue(name, kind)
    return SafeJSONResponse({"vm": name, "kind": kind, "ticket": ticket, "expires_in": node.tickets.ttl,
                             "url": f"{Tickets.path(name, kind)}?ticket={ticket}"}, status_code=201)


async def _until_stop(node: Node) -> None:
    sid, queue = node.bus.subscribe()
    try:
        while not node.bus.stopping and await queue.get() is not STOP:
            pass
    finally:
        node.bus.unsubscribe(sid)


async def _relay(ws: WebSocket, node: Node, read: Callable[[], Awaitable[bytes]],
                 write: Callable[[bytes], Awaitable[None]]) -> None:
    """Bytes both ways until one side ends or the node stops; then close the WebSocket."""

    async def to_client() -> None:
        while data := await read():
            await ws.send_bytes(data)

    async def to_console() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data:
                await write(data)

    tasks = [asyncio.ensure_future(c) for c in (to_client(), to_console(), _until_stop(node))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError):
                await t
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                await ws.close(1000)


@router.websocket("/{name}/console/vnc")
async def console_vnc(websocket: WebSocket, name: VmName, ticket: Ticket = None) -> None:
    node: Node = websocket.app.state.node
    ep: Endpoint = await run_in_threadpool(endpoint, node.vms, name, "vnc")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), VNC_CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        raise Unavailable(f"VM '{name}': its VNC server at {ep.host}:{ep.port} does not answer ({e or 'timeout'})",
                          hint="retry; the VM may be starting or stopping") from None
    await websocket.accept(subprotocol="binary" if "binary" in websocket.scope.get("subprotocols", []) else None)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    try:
        await _relay(websocket, node, lambda: reader.read(65536), write)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@router.websocket("/{name}/console/serial")
async def console_serial(websocket: WebSocket, name: VmName, ticket: Ticket = None) -> None:
    node: Node = websocket.app.state.node
    ep: Endpoint = await run_in_threadpool(endpoint, node.vms, name, "serial")
    try:
        fd = os.open(ep.pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise Unavailable(f"VM '{name}': cannot open its serial console {ep.pty}: {e.strerror}") from None
    loop = asyncio.get_running_loop()
    incoming: asyncio.Queue[bytes] = asyncio.Queue(256)

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # the VM went away (EIO): end of stream
        if incoming.full():
            incoming.get_nowait()  # a client that does not keep up loses old output, never blocks us
        incoming.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    try:
        with contextlib.suppress(termios.error):
            tty.setraw(fd)  # bytes as they are: no echo, no line editing on our side of the pty
        loop.add_reader(fd, readable)
        await websocket.accept()

        async def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.01)

        await _relay(websocket, node, incoming.get, write)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
