"""The console keyboard layout of the real host, through :mod:`qx_console.keyboard` (the list and the
rules the installer and the answer file share): ``loadkeys`` on the running console, ``KEYMAP=`` in
``vconsole.conf`` on the data partition for the next boots.

Call order of :meth:`Keys.set_layout`: checked, written (atomically) first, then loaded; a console where
``loadkeys`` cannot work (serial line, no kbd) still keeps the choice for the next boot, and the reason
is returned for the screen to show.
"""

from __future__ import annotations

from qx_console import keyboard
from qx_console.host.context import HostContext


class Keys:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx

    def layout(self) -> str:
        return keyboard.read_layout(self.ctx.root)

    def set_layout(self, name: str) -> str | None:
        keyboard.write_layout(self.ctx.root, name)
        return keyboard.apply_layout(name)
