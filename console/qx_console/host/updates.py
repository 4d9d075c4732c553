"""Updates of the real host: what qx-update reports (slots, channel, a check's result, a pending
version) and what the operator asks of it (check, apply, rollback, channel).

All of it goes through one :class:`qx_console.clients.UpdateClient` (``qx-update --json``); this module is
the only one of the host that knows qx-update, so changing how the console reads it is a change here.
Invariant: the channel is saved in the host configuration only after qx-update accepted it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qx_common.errors import QxError

from qx_console.backend import ProgressFn, UpdateState
from qx_console.clients import UpdateClient
from qx_console.hostconfig import validate
from qx_console.host.context import HostContext


@dataclass(frozen=True)
class UpdateSummary:
    """The status screen's update lines; ``detail`` says why the rest is empty, when it is."""

    channel: str = ""
    pending: str = ""
    available: str = ""
    last_check: str = ""
    detail: str = ""
    blessed: bool | None = None       # the running slot's boot entry, as qx-update reads it (None: unknown)


class Updates:
    def __init__(self, ctx: HostContext, client: UpdateClient | None = None) -> None:
        self.ctx = ctx
        self.client = client or UpdateClient()

    def summary(self) -> UpdateSummary:
        """Never raises: a qx-update that is missing or fails is the summary's ``detail``."""
        try:
            us = self.client.status()
        except QxError as e:
            return UpdateSummary(detail=f"not available: {e}")
        running = [s.blessed for s in us.slots if s.active]
        return UpdateSummary(us.channel, us.pending, us.available, us.last_check,
                             blessed=running[0] if running else None)

    def status(self) -> UpdateState:
        return self.client.status()

    def check(self) -> UpdateState:
        return self.client.check()

    def apply(self, progress: ProgressFn) -> str:
        return self.client.apply(progress)

    def rollback(self) -> str:
        return self.client.rollback()

    def set_channel(self, name: str) -> None:
        cfg, _ = self.ctx.load_config()
        new = replace(cfg, update_channel=name)
        validate(new)
        self.client.set_channel(name)
        self.ctx.store.save(new, "console", ("update_channel",))
