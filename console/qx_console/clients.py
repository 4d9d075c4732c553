"""Clients of the other Quantix services: the qx-node API and the qx-update command.

Both are optional from the console's point of view: a node that is down shows as "unreachable",
an absent or failing ``qx-update`` as :class:`~qx_console.backend.BackendUnavailable` with the reason.
Neither ever fakes a result. Short timeouts: these are called from workers, but a stuck call would
still delay the next status refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.run import run, spawn, which

from qx_update import (ApplyResult, ChannelResult, CheckResult, ErrorReport, Model, ProgressEvent, RollbackResult,
                       SchemaError, UpdateStatus, read_apply_line)

from qx_console.backend import BackendUnavailable, ProgressFn, SlotInfo, UpdateState

NODE_URL = "https://127.0.0.1:8443"
_M = TypeVar("_M", bound=Model)


class NodeClient:
    def __init__(self, base_url: str, cert: Path | None, token_file: Path | None, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.cert = cert
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _get(self, path: str, auth: bool) -> Any:
        headers = {}
        if auth and self.token_file is not None:
            try:
                headers["Authorization"] = "Bearer " + self.token_file.read_text().strip()
            except OSError as e:
                raise ExternalError(f"no API token ({self.token_file}: {e.strerror})") from e
        verify: bool | str = str(self.cert) if self.cert and self.cert.exists() else False
        if self.base_url.startswith("http://"):
            verify = True
        try:
            r = self._session.get(self.base_url + path, headers=headers, timeout=self.timeout_s, verify=verify)
            r.raise_for_status()
            return r.json()
        except (requests.RequestException, ValueError) as e:
            raise ExternalError(f"qx-node unreachable ({type(e).__name__})") from e

    def health(self) -> dict[str, Any]:
        return self._get("/health", auth=False)

    def vms(self) -> list[dict[str, Any]]:
        data = self._get("/v1/vms", auth=True)
        if isinstance(data, dict):
            data = data.get("vms", data.get("items", []))
        return list(data)


class UpdateClient:
    """``qx-update --json <verb>`` (``--json`` is qx-update's global flag, before the verb), read through
    qx-update's public models (exported by :mod:`qx_update`): its output is one model serialised, checked field by
    field on reading (``schema_version`` included), so the console never guesses at keys. ``apply``
    prints :class:`~qx_update.ProgressEvent` lines before its result, which move the progress bar.

    qx-update runs as its own process: it takes the update lock and may run for minutes (apply), and
    its exit codes and errors are the same the operator would see on a shell."""

    def __init__(self, command: Sequence[str] = ("qx-update",), timeout_s: float = 30.0) -> None:
        self.command = list(command)
        self.timeout_s = timeout_s

    def _require(self) -> None:
        if "/" not in self.command[0] and which(self.command[0]) is None:
            raise BackendUnavailable(f"'{self.command[0]}' is not installed on this host")
        if "/" in self.command[0] and not Path(self.command[0]).exists():
            raise BackendUnavailable(f"'{self.command[0]}' is not installed on this host")

    def _call(self, model: type[_M], args: list[str], timeout: float | None = None) -> _M:
        self._require()
        try:
            proc = run([*self.command, "--json", *args], check=False, timeout=timeout or self.timeout_s)
        except ExternalError as e:
            raise BackendUnavailable(f"qx-update {args[0]}: {e}") from e
        if proc.returncode != 0:
            raise ExternalError(f"qx-update {args[0]} failed: {_error(proc.stdout, proc.stderr, proc.returncode)}")
        try:
            return model.from_json(proc.stdout)
        except SchemaError as e:
            raise BackendUnavailable(f"qx-update {args[0]}: {e.message}") from e

    def status(self) -> UpdateState:
        return _state(self._call(UpdateStatus, ["status"]))

    def check(self) -> UpdateState:
        # The check's own result is recorded in qx-update's state (last_check): status then says the
        # same, with the slots, so the screen shows one consistent picture.
        self._call(CheckResult, ["check"], timeout=120)
        return self.status()

    def rollback(self) -> str:
        return self._call(RollbackResult, ["rollback"]).message

    def set_channel(self, name: str) -> None:
        self._call(ChannelResult, ["channel", "set", name])

    def apply(self, progress: ProgressFn) -> str:
        """Stream ``apply --json``: every progress line moves the progress bar; the last line is the result."""
        self._require()
        argv = [*self.command, "--json", "apply"]
        # The one streaming call: spawn() gives it run()'s clean environment and keeps stderr off a pipe.
        result: ApplyResult | None = None
        failure: ErrorReport | None = None
        progress(0.0, "installing into the other slot...")
        try:
            with spawn(argv, text=True, check=False, wait_timeout=None) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    try:
                        item = read_apply_line(line)
                    except SchemaError as e:
                        raise BackendUnavailable(f"qx-update apply: {e.message}") from e
                    if isinstance(item, ProgressEvent):
                        progress(item.fraction, item.message)
                    elif isinstance(item, ApplyResult):
                        result = item
                    elif isinstance(item, ErrorReport):
                        failure = item
        except EnvironmentError_ as e:
            raise BackendUnavailable(f"qx-update apply: {e}") from e
        rc = proc.returncode
        if rc != 0:
            msg = failure.error if failure else _error("", proc.stderr_text(), rc)
            raise ExternalError(f"qx-update apply failed: {msg}")
        if result is None:
            raise BackendUnavailable("qx-update apply printed no result")
        progress(1.0, "done")
        return result.message


def _error(stdout: str, stderr: str, rc: int | None) -> str:
    """A failed command's message: its ErrorReport, else the last line it wrote on stderr."""
    try:
        return ErrorReport.from_json(stdout.strip().splitlines()[-1]).error
    except (SchemaError, IndexError):
        return (stderr.strip().splitlines() or [f"exit code {rc}"])[-1]


def _state(st: UpdateStatus) -> UpdateState:
    """The console's view of qx-update's status: the slots, what the last check found (unless it is
    installed or running already) and an update installed in the other slot awaiting a reboot."""
    slots = [SlotInfo(name=name, version=s.version or "", active=s.active, blessed=s.blessed, bad=s.bad)
             for name, s in sorted(st.slots.items())]
    return UpdateState(slots=slots, channel=st.channel, available=st.available or "",
                       pending=st.awaiting_reboot or "", last_check=st.last_check.result if st.last_check else "",
                       detail=st.message, raw=st.to_dict())
