"""The host's A/B updates as the node API offers them: qx-update, run as its own command.

qx-node never updates the host itself. Every operation runs the real ``qx-update --json <verb>``
(``Settings.update_cmd``; a separate, privileged process that takes the update lock and may run for
minutes) through :func:`qx_common.run.run` / :func:`~qx_common.run.spawn`, and reads its output only
through qx-update's public models (:mod:`qx_update`: ``UpdateStatus.from_json`` …), checked field by
field (``schema_version`` included) — the same boundary the console keeps (qx_console.clients). Nothing
here writes or guesses qx-update's JSON, and nothing is cached: every answer is what qx-update says now.

Failures become the node's errors, with qx-update's own message and hint (its ``ErrorReport``):

* qx-update not installed, or its environment missing (exit 3) → :class:`Unavailable` (503);
* a refusal (exit 2: nothing to roll back to, a bad channel, the update lock held) → :class:`Conflict` (409);
* anything else (the update server unreachable, a bad signature: exit 4; a timeout; output that is not
  the documented model) → :class:`BackendError` (502).

Call order: ``UpdateService(settings.update_cmd)``; :meth:`status`, :meth:`check`, :meth:`rollback`,
:meth:`set_channel` answer at once (a worker thread); :meth:`apply` is the body of a task
(``Tasks.start("update", ...)``): it streams qx-update's :class:`~qx_update.ProgressEvent` lines into the
task's progress and returns the :class:`~qx_update.ApplyResult`. One apply at a time: while one started here
runs, another apply, a check, a rollback and a channel change are refused here (409: the state forbids it)
before a process starts; qx-update's own lock refuses them anyway when another qx-update holds it (the timer's,
the console's), which it reports as exit 3 — a 503 to retry later.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from qx_common import log
from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.run import run, spawn
from qx_node.errors import BackendError, Conflict, InvalidField, Unavailable, printable
from qx_node.tasks import Task
from qx_update import (CHANNELS, ApplyResult, ChannelResult, CheckResult, ErrorReport, Model, ProgressEvent,
                       RollbackResult, SchemaError, UpdateStatus, read_apply_line)

_log = log.get("node.updates")
_M = TypeVar("_M", bound=Model)

STATUS_TIMEOUT = 30.0
CHECK_TIMEOUT = 120.0  # a metadata refresh from the update server
CHANGE_TIMEOUT = 60.0  # rollback, channel: local files only, but they wait for the update lock
_SAME_IMAGE = "qx-node and qx-update must come from the same image"


def _report(stdout: str) -> ErrorReport | None:
    """The ErrorReport a failed ``--json`` command printed as its last stdout line, if any."""
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        return ErrorReport.from_json(lines[-1])
    except SchemaError:
        return None


def _failure(verb: str, report: ErrorReport | None, stderr: str, rc: int | None) -> Exception:
    """qx-update's failure as the node's error: its exit code says whose fault it is."""
    if report is None:
        tail = (stderr.strip().splitlines() or [f"exit code {rc}"])[-1]
        return BackendError(f"qx-update {verb} failed: {tail}", hint="see the node's journal (qx-update)")
    message = f"qx-update {verb}: {report.error}"
    if report.exit_code == 2:
        return Conflict(message, hint=report.hint)
    if report.exit_code == 3:
        return Unavailable(message, hint=report.hint)
    return BackendError(message, hint=report.hint)


class UpdateService:
    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self._applying = threading.Lock()  # held for the whole of one apply task

    def _call(self, model: type[_M], args: list[str], timeout: float) -> _M:
        verb = args[0]
        try:
            proc = run([*self.command, "--json", *args], check=False, timeout=timeout)
        except EnvironmentError_ as e:
            raise Unavailable(f"qx-update {verb}: {e.message}",
                              hint="qx-update ships in the Quantix OS image; on another machine updates are not "
                                   "available") from e
        except ExternalError as e:  # the timeout
            raise BackendError(f"qx-update {verb}: {e.message}", hint="see the node's journal (qx-update)") from e
        if proc.returncode != 0:
            raise _failure(verb, _report(proc.stdout), proc.stderr, proc.returncode)
        try:
            return model.from_json(proc.stdout)
        except SchemaError as e:
            raise BackendError(f"qx-update {verb}: {e.message}", hint=_SAME_IMAGE) from e

    # -- reads and quick changes ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """qx-update's status, plus what it derives (``available``, ``awaiting_reboot``) and whether an
        apply started through this node is running now."""
        st = self._call(UpdateStatus, ["status"], STATUS_TIMEOUT)
        return {**st.to_dict(), "available": st.available, "awaiting_reboot": st.awaiting_reboot,
                "applying": self._applying.locked()}

    def check(self) -> dict[str, Any]:
        self._refuse_while_applying("check")
        return self._call(CheckResult, ["check"], CHECK_TIMEOUT).to_dict()

    def rollback(self) -> dict[str, Any]:
        self._refuse_while_applying("rollback")
        result = self._call(RollbackResult, ["rollback"], CHANGE_TIMEOUT)
        _log.warning("updates: rollback through the API: %s", result.message)
        return result.to_dict()

    def set_channel(self, name: str) -> dict[str, Any]:
        self._refuse_while_applying("channel")
        result = self._call(ChannelResult, ["channel", "set", name], CHANGE_TIMEOUT)
        _log.warning("updates: channel set to %s through the API", result.channel)
        return result.to_dict()

    # -- apply (a task) ---------------------------------------------------------------------------------
    def _refuse_while_applying(self, what: str) -> None:
        if self._applying.locked():
            raise Conflict(f"{what}: an update is being applied now",
                           hint="wait for its task to end (GET /v1/tasks), then ask again")

    def begin_apply(self) -> None:
        """Take the one apply slot, or refuse (409) before a task or a process exists."""
        if not self._applying.acquire(blocking=False):
            raise Conflict("an update is being applied already", hint="follow its task (GET /v1/tasks)")

    def abandon_apply(self) -> None:
        """Give the slot back when the task could not be started after :meth:`begin_apply`."""
        self._applying.release()

    def apply(self, task: Task) -> dict[str, Any]:
        """The task's work (after :meth:`begin_apply`): stream ``apply --json``; each progress line moves
        the task (per phase: download, write …); the last line is the result. Releases the slot."""
        try:
            return self._apply(task)
        finally:
            self._applying.release()

    def _apply(self, task: Task) -> dict[str, Any]:
        result: ApplyResult | None = None
        failure: ErrorReport | None = None
        # qx-update reports each phase (download, write, verify …) from 0 to 100 %, and how many phases
        # come depends on the release (full image or chunks). The task's one number must only grow: phase k
        # (from 0) spans k/(k+1) .. (k+1)/(k+2), so it rises with every line and reaches 1 only at the end;
        # the message names the phase and its own percent.
        phases: list[str] = []
        task.progress(0.0, "qx-update apply: starting")
        try:
            # spawn(): run()'s clean environment, stderr kept off a pipe while stdout streams.
            with spawn([*self.command, "--json", "apply"], text=True, check=False, wait_timeout=None) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    try:
                        item = read_apply_line(line)
                    except SchemaError as e:
                        raise BackendError(f"qx-update apply: {e.message}", hint=_SAME_IMAGE) from e
                    if isinstance(item, ProgressEvent):
                        if item.phase not in phases:
                            phases.append(item.phase)
                        k = phases.index(item.phase)
                        task.progress((k + item.fraction) / (k + 2), f"step {k + 1}: {item.message}")
                    elif isinstance(item, ApplyResult):
                        result = item
                    elif isinstance(item, ErrorReport):
                        failure = item
        except EnvironmentError_ as e:
            raise Unavailable(f"qx-update apply: {e.message}",
                              hint="qx-update ships in the Quantix OS image") from e
        if proc.returncode != 0:
            raise _failure("apply", failure, proc.stderr_text(), proc.returncode)
        if result is None:
            raise BackendError("qx-update apply printed no result", hint=_SAME_IMAGE)
        _log.warning("updates: apply through the API: %s", result.message)
        return result.to_dict()


def parse_channel(body: Any) -> str:
    """The body of ``PUT /v1/host/updates/channel``: ``{"channel": "stable"}``."""
    if not isinstance(body, dict):
        raise InvalidField("body: must be a JSON object", field="body", hint='{"channel": "stable"}')
    unknown = sorted(set(body) - {"channel"})
    if unknown:
        shown = printable(unknown[0])
        raise InvalidField(f"{shown}: unknown field", field=shown, hint='only "channel"')
    name = body.get("channel")
    if name not in CHANNELS:
        raise InvalidField("channel: must be one of " + ", ".join(CHANNELS), field="channel",
                           hint="the update server publishes each release to some of these channels")
    return str(name)


CHANNEL_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["channel"],
                                  "properties": {"channel": {"enum": list(CHANNELS)}}}
