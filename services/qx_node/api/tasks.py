"""Routes: /v1/tasks — long operations (create, clone, snapshot: :mod:`qx_node.api.longops`; ISO
uploads, maintenance with stop_vms) and their progress; cancel where possible."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from qx_node.node import Node
from qx_node.tasks import TASK_ID_PATTERN

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="the task's id (32 hex digits)")]


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("", summary="Running tasks and the most recent finished ones, newest first")
def list_tasks(request: Request) -> list[dict[str, Any]]:
    return _node(request).tasks.list()


@router.get("/{id}", summary="One task: state, progress (percent), result or error")
def get_task(request: Request, id: TaskId) -> dict[str, Any]:  # noqa: A002 - the path parameter's name
    return _node(request).tasks.get(id)


@router.post("/{id}/cancel", status_code=202,
             summary="Ask a cancellable running task to stop; it undoes its work and ends 'cancelled'")
def cancel_task(request: Request, id: TaskId) -> dict[str, Any]:  # noqa: A002
    return _node(request).tasks.cancel(id)
