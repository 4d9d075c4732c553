"""Long operations as tasks: run on a worker thread, observable (``/v1/tasks``, SSE), some cancellable.

A :class:`Task` is created by :meth:`Tasks.start` (which returns at once) or :meth:`Tasks.track`
(a context manager for work the caller does itself, the streaming ISO upload). :meth:`Task.on_end`
runs a callback once the task has ended (at once if it has already): how a request that asked to
wait for its task (``?wait=true``, :mod:`qx_node.api.longops`) learns the outcome without a thread. The work function
gets the task and reports with :meth:`Task.progress`; a cancellable work function calls
:meth:`Task.check` between steps, which raises :class:`Cancelled` once a client asked to cancel.
The work function must undo what it did when it raises (the task only records the outcome).

States: ``running`` → ``succeeded`` | ``failed`` | ``cancelled``. A failed task's ``error`` is the
same ``{"error", "field", "hint"}`` a synchronous call would have answered, plus its ``status``.

Events on the bus (``type: "task"``): one when the task starts, one when it ends, and progress in
between — at most one per ``PROGRESS_STEP`` of progress and per ``PROGRESS_INTERVAL`` seconds, so a
fast copy cannot flood the SSE stream.

Memory and threads are bounded: at most ``max_running`` tasks run at once (one more is refused
with a 409 before anything is done); running tasks are always kept; of the finished ones only the
newest ``history`` are (older ones are forgotten, ``GET /v1/tasks/{id}`` then answers 404). Tasks live in memory only:
a restart of qx-node forgets them (a task's effect is what the VM and volume APIs show).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qx_common import log
from qx_common.errors import QxError
from qx_node.errors import Conflict, NotFound

_log = log.get("node.tasks")

HISTORY = 100
MAX_RUNNING = 16
PROGRESS_STEP = 0.01
PROGRESS_INTERVAL = 0.5
TASK_ID_PATTERN = r"^[0-9a-f]{32}$"


class Cancelled(Conflict):
    """Raised inside a task's work when a client cancelled it (a 409 for a synchronous caller)."""


class Task:
    def __init__(self, tasks: Tasks, kind: str, target: str, cancellable: bool) -> None:
        self.id = secrets.token_hex(16)
        self.kind = kind
        self.target = target
        self.cancellable = cancellable
        self.state = "running"
        self.fraction = 0.0
        self.message = "started"
        self.created = time.time()
        self.finished: float | None = None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._tasks = tasks
        self._cancel = threading.Event()
        self._last_event = (0.0, 0.0)  # (fraction, monotonic time) of the last progress event
        self._end_lock = threading.Lock()
        self._on_end: list[Callable[[], None]] | None = []  # None once the task has ended

    @property
    def url(self) -> str:
        return f"/v1/tasks/{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "state": self.state,
                "progress": round(self.fraction * 100, 1), "message": self.message,
                "cancellable": self.cancellable and self.state == "running",
                "cancel_requested": self._cancel.is_set(), "created": self.created, "finished": self.finished,
                "result": self.result, "error": self.error, "url": self.url}

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1); an event goes out only for a step of PROGRESS_STEP or more."""
        self.fraction = min(max(fraction, 0.0), 1.0)
        if message is not None:
            self.message = message
        now = time.monotonic()
        last_f, last_t = self._last_event
        if self.fraction - last_f >= PROGRESS_STEP and now - last_t >= self._tasks.interval:
            self._last_event = (self.fraction, now)
            self._tasks.publish(self)

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the task has ended (on the task's thread), or now if it has."""
        with self._end_lock:
            if self._on_end is not None:
                self._on_end.append(callback)
                return
        callback()

    def _ended(self) -> None:
        with self._end_lock:
            callbacks, self._on_end = self._on_end or [], None
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a waiter that went away must not fail the task's thread
                _log.exception("tasks: an end callback of %s %s failed", self.kind, self.id)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a client asked to cancel (call between steps of the work)."""
        if self._cancel.is_set():
            raise Cancelled(f"{self.kind} of '{self.target}' was cancelled", hint="nothing of it was kept")


class Tasks:
    def __init__(self, publish: Callable[[dict[str, Any]], None], history: int = HISTORY,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self._publish = publish
        self.history = history
        self.interval = interval  # at most one progress event per task per this many seconds
        self.max_running = MAX_RUNNING
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, Task] = OrderedDict()  # oldest first

    def publish(self, task: Task) -> None:
        self._publish({"type": "task", "task": task.to_json()})

    # -- creating ---------------------------------------------------------------------------------
    def _new(self, kind: str, target: str, cancellable: bool) -> Task:
        task = Task(self, kind, target, cancellable)
        with self._lock:
            running = sum(1 for t in self._tasks.values() if t.state == "running")
            if running >= self.max_running:
                raise Conflict(f"{running} tasks are running, the most this host runs at once",
                               hint="wait for one to end (GET /v1/tasks), then ask again")
            self._tasks[task.id] = task
        self.publish(task)
        return task

    def _finish(self, task: Task, error: BaseException | None, result: dict[str, Any] | None) -> None:
        if error is None:
            task.state, task.result, task.fraction, task.message = "succeeded", result, 1.0, "done"
        elif isinstance(error, Cancelled):
            task.state, task.message = "cancelled", "cancelled"
            task.error = {"status": 409, "error": error.message, "field": None, "hint": error.hint}
        elif isinstance(error, QxError):
            task.state, task.message = "failed", error.message
            task.error = {"status": getattr(error, "status", 500), "error": error.message,
                          "field": getattr(error, "field", None), "hint": error.hint}
        else:
            _log.error("tasks: %s of %s failed with an internal error", task.kind, task.target, exc_info=error)
            task.state, task.message = "failed", f"internal error ({type(error).__name__}); see the node's log"
            task.error = {"status": 500, "error": task.message, "field": None, "hint": None}
        task.finished = time.time()
        self._prune()
        self.publish(task)
        task._ended()

    def _prune(self) -> None:
        with self._lock:
            done = [t for t in self._tasks.values() if t.state != "running"]
            for t in done[: max(len(done) - self.history, 0)]:
                del self._tasks[t.id]

    def start(self, kind: str, target: str, work: Callable[[Task], dict[str, Any]],
              cancellable: bool = False) -> Task:
        """Run ``work(task)`` on a thread of its own; returns the running task at once."""
        task = self._new(kind, target, cancellable)

        def run() -> None:
            try:
                result = work(task)
            except BaseException as e:  # noqa: BLE001 - recorded in the task, the thread ends
                self._finish(task, e, None)
            else:
                self._finish(task, None, result)

        threading.Thread(target=run, name=f"task-{kind}-{task.id[:8]}", daemon=True).start()
        return task

    @contextmanager
    def track(self, kind: str, target: str, cancellable: bool = False) -> Iterator[Task]:
        """A task for work the caller does in place (its outcome is recorded when the block ends)."""
        task = self._new(kind, target, cancellable)
        try:
            yield task
        except BaseException as e:
            self._finish(task, e, None)
            raise
        self._finish(task, None, task.result)

    # -- reading, cancelling ----------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            tasks = list(self._tasks.values())
        return [t.to_json() for t in reversed(tasks)]  # newest first

    def _get(self, task_id: str) -> Task:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"task '{task_id}' does not exist (finished tasks are kept for the last {self.history})",
                           field="id", hint="GET /v1/tasks lists the known tasks")
        return task

    def get(self, task_id: str) -> dict[str, Any]:
        return self._get(task_id).to_json()

    def cancel(self, task_id: str) -> dict[str, Any]:
        task = self._get(task_id)
        if task.state != "running":
            raise Conflict(f"task '{task_id}' has already {task.state}", hint="only a running task can be cancelled")
        if not task.cancellable:
            raise Conflict(f"task '{task_id}' ({task.kind}) cannot be cancelled",
                           hint="it is one step that libvirt does at once; wait for it to end")
        task._cancel.set()
        _log.info("tasks: cancel of %s %s (%s) requested", task.kind, task.target, task.id)
        self.publish(task)
        return task.to_json()

    @property
    def running(self) -> int:
        with self._lock:
            return sum(1 for t in self._tasks.values() if t.state == "running")
