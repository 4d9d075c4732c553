"""Routes: the host's A/B updates — status, check, apply (a task), rollback, channel — through qx-update.

Behind the token or a web session like every route; every change (POST, PUT) is refused with 423 in
lockdown mode, as the other host-configuration routes are (reads still work). The work is
:mod:`qx_node.updates` (the real ``qx-update`` command); these routes only run it off the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.lockdown import refuse_changes_while_locked
from qx_node.node import Node
from qx_node.updates import CHANNEL_SCHEMA, parse_channel

router = APIRouter(prefix="/v1/host/updates", tags=["updates"], dependencies=[Depends(refuse_changes_while_locked)])


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("", summary="Update state: running slot and release, both slots, channel, what the last check found, "
                        "an update awaiting a reboot, the last rollback and why (qx-update status)")
def get_updates(request: Request) -> dict[str, Any]:
    return _node(request).updates.status()


@router.post("/check", summary="Refresh the signed metadata from the update server and say what would be "
                               "installed (qx-update check)")
def check_updates(request: Request) -> dict[str, Any]:
    return _node(request).updates.check()


@router.post("/apply", status_code=202, response_model=None,
             summary="Install the newest eligible release into the other slot, as a task (202; progress on "
                     "/v1/tasks and the event stream; its result is qx-update's). No reboot: the next boot "
                     "starts it (POST /v1/host/reboot)")
def apply_update(request: Request) -> JSONResponse:
    node = _node(request)
    node.updates.begin_apply()
    try:
        task = node.tasks.start("update", node.settings.host, node.updates.apply)
    except BaseException:
        node.updates.abandon_apply()
        raise
    return SafeJSONResponse(task.to_json(), status_code=202, headers={"Location": task.url})


@router.post("/rollback", summary="Boot the other slot next, or cancel an installed update not booted yet "
                                  "(qx-update rollback; no reboot)")
def rollback_update(request: Request) -> dict[str, Any]:
    return _node(request).updates.rollback()


@router.put("/channel", summary="Set the update channel (kept in the host's override file)",
            openapi_extra={"requestBody": {"required": True,
                                           "content": {"application/json": {"schema": CHANNEL_SCHEMA}}}})
async def put_channel(request: Request) -> dict[str, Any]:
    name = parse_channel(await json_body(request))
    return await run_in_threadpool(_node(request).updates.set_channel, name)
