"""The one contract of the long operations: create a VM, clone a VM, take a snapshot.

Each can take long (disks to create or copy, a running VM's memory to write out), so each is a
task (:mod:`qx_node.tasks`) and its route answers through :func:`answer`. Call order in the route:

1. parse and validate the body and the query — bad input is a 422 and never makes a task;
2. the operation's synchronous checks, which also reserve what the work needs (the VM or name is
   held ``busy``): a missing VM is a 404, a name in use, a VM in the wrong state or what does not
   fit (memory, disk space) a 409 — all at once, before any task exists;
3. the task is started, and :func:`answer` replies.

The reply:

* by default, at once: **202 Accepted**, ``Location: /v1/tasks/{id}``, the body the task
  (``kind``, ``state: running``, ``progress``...). Its progress is on ``GET /v1/tasks/{id}`` and
  as ``task`` events on ``/v1/events``; it ends ``succeeded`` with ``result`` (the new VM or
  snapshot, as ``wait=true`` answers it), or ``failed`` / ``cancelled`` with ``error``
  ``{"status", "error", "field", "hint"}`` — what failed while the work ran (the pool filled up,
  libvirt refused, a change made by someone else between the checks and the work).
* with ``?wait=true`` (scripts that want one answer): the same task, and the request waits for its
  end — **201** with the result and ``Location`` the new object, or the task's error status with
  the ``{"error", "field", "hint"}`` body. Both name the task in ``X-Qx-Task``. A client that goes
  away while waiting does not stop the task (cancel it: ``POST /v1/tasks/{id}/cancel``).

The ISO upload (``PUT /v1/storage/isos/{name}``) is not one of them: its body is the data, so it
cannot answer before the data is in; it answers 201 then, and is a task meanwhile for every other
client (progress, cancel), named in ``X-Qx-Task``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastapi import Query
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, error_response
from qx_node.tasks import Task

WAIT = Query(False, description="wait for the task to end: 201 with the result (Location: the new object), or the "
                                "task's error; without it the answer is 202 at once with the task "
                                "(Location: /v1/tasks/{id})")


def accepted(task: Task) -> JSONResponse:
    """202 with the task, its URL in Location."""
    return SafeJSONResponse(task.to_json(), status_code=202, headers={"Location": task.url})


async def answer(task: Task, wait: bool, location: Callable[[dict[str, Any]], str]) -> JSONResponse:
    """The reply for a started long operation: 202 with the task, or (``wait``) its outcome.
    ``location(result)``: the URL of what the task made."""
    if not wait:
        return accepted(task)
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the server's loop has closed: nobody waits any more
            loop.call_soon_threadsafe(ended.set)

    task.on_end(wake)
    await ended.wait()
    if task.state == "succeeded" and task.result is not None:
        return SafeJSONResponse(task.result, status_code=201,
                                headers={"Location": location(task.result), "X-Qx-Task": task.url})
    err = task.error or {"status": 500, "error": task.message, "field": None, "hint": None}
    return error_response(int(err.get("status") or 500), err.get("error") or task.message, err.get("field"),
                          err.get("hint"), headers={"X-Qx-Task": task.url})
