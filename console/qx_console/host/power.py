"""Reboot and power off (systemd). The console asks for the password before it calls this."""

from __future__ import annotations

from qx_common.errors import UserError

from qx_console.host.context import HostContext

POWER_ACTIONS = ("reboot", "poweroff")


class Power:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx

    def power(self, action: str) -> None:
        if action not in POWER_ACTIONS:
            raise UserError(f"power action: '{action}' is unknown", hint="use reboot or poweroff")
        self.ctx.cmd(["systemctl", action], timeout=30)
