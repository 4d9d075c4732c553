"""First boot of a raw image: the console asks for a root password, once, before anything else.

The real backend (:class:`LinuxBackend`) against a temporary host root whose ``/etc/shadow`` has root's
password locked, as the raw image ships it; the password is set through the real libcrypt and read back
from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from qx_console import shadow
from qx_console.app import ConsoleApp
from qx_console.clients import NodeClient, UpdateClient
from qx_console.customize import LoginScreen
from qx_console.firstboot import FirstBootPasswordScreen, needs_root_password, password_locked
from qx_console.linux import LinuxBackend
from qx_console.memory import MemoryBackend
from qx_console.status import StatusScreen

from .helpers import bad_glyphs, frame_text, on_screen, push, until

pytestmark = pytest.mark.anyio
SIZE = (80, 24)

# Keys an operator might press that must neither leave the first-boot screen nor stop the console.
MASH = ["escape", "f1", "f2", "f3", "f5", "f9", "f11", "f12", "ctrl+q", "ctrl+c", "ctrl+z", "ctrl+p",
        "ctrl+backslash", "up", "down", "pageup", "pagedown", "home", "end", "tab", "shift+tab", "a", "1", "space"]


def lock_root(root: Path, field: str = "!") -> Path:
    f = root / "etc/shadow"
    lines = f.read_text().splitlines()
    lines[0] = ":".join(["root", field, *lines[0].split(":")[2:]])
    f.write_text("\n".join(lines) + "\n")
    return f


def root_field(shadow_file: Path) -> str:
    return next(ln.split(":")[1] for ln in shadow_file.read_text().splitlines() if ln.startswith("root:"))


def backend(root: Path) -> LinuxBackend:
    return LinuxBackend(root, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5),
                        updates=UpdateClient(["qx-update-not-installed"]))


async def type_into(pilot, wid: str, text: str) -> None:
    inp = pilot.app.screen.query_one(f"#{wid}", Input)
    inp.focus()
    inp.value = ""
    await pilot.press(*text) if text else None


@pytest.mark.parametrize("field,locked", [("!", True), ("*", True), ("", True), ("!$y$j9T$abc$def", True),
                                          ("!!", True), ("$y$j9T$abc$def", False)])
def test_password_locked(tmp_path: Path, field: str, locked: bool) -> None:
    f = tmp_path / "shadow"
    f.write_text(f"daemon:*:20000:0:99999:7:::\nroot:{field}:20000:0:99999:7:::\n")
    assert password_locked(f) is locked


def test_missing_shadow_or_user_is_not_locked(tmp_path: Path) -> None:
    assert not password_locked(tmp_path / "nope")
    (tmp_path / "shadow").write_text("daemon:*:20000:0:99999:7:::\n")
    assert not password_locked(tmp_path / "shadow")


def test_only_backends_with_a_shadow_file_ask(hostroot: Path) -> None:
    assert not needs_root_password(MemoryBackend())
    assert not needs_root_password(backend(hostroot))
    lock_root(hostroot)
    assert needs_root_password(backend(hostroot))


async def test_locked_root_asks_first_then_status_and_never_again(hostroot: Path) -> None:
    shadow_file = lock_root(hostroot)
    app = ConsoleApp(backend(hostroot), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen)
                    and on_screen(app, "This host has no root password yet"))
        assert not bad_glyphs(app)
        text = frame_text(app)
        assert "First boot: set the root password" in text and "F10 Set password" in text
        # Nothing else first: Esc, F2 and F12 (and any other key) leave the question on screen.
        for key in MASH:
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, FirstBootPasswordScreen), key
        assert app.is_running and not app.errors
        assert not any(isinstance(s, LoginScreen) for s in app.screen_stack)
        assert on_screen(app, "Set the root password first")

        # Too short.
        await type_into(pilot, "new", "short")
        await type_into(pilot, "again", "short")
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "new password: is shorter than 8 characters"))
        # Mismatch.
        await type_into(pilot, "new", "first-secret")
        await type_into(pilot, "again", "other-secret")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "confirm password: does not match"))
        assert root_field(shadow_file) == "!"

        # Enter in the first field goes to the second; Enter there sets it.
        await type_into(pilot, "new", "new-root-pw")
        await pilot.press("enter")
        assert app.screen.query_one("#again", Input).has_focus
        await pilot.press(*"new-root-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "Root password set."))
        assert shadow.verify(shadow_file, "root", "new-root-pw")
        assert shadow_file.stat().st_mode & 0o777 == 0o640
        # F2 now opens the login, which takes the new password.
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert not app.errors

    # "Once": the next start of the console goes straight to the status screen.
    app2 = ConsoleApp(backend(hostroot), refresh_s=3600)
    async with app2.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app2.screen, StatusScreen) and on_screen(app2, "F2 Customize"))
        assert not any(isinstance(s, FirstBootPasswordScreen) for s in app2.screen_stack)


async def test_password_set_on_the_other_console_is_kept(hostroot: Path) -> None:
    """tty1 and the serial console both ask; the first to set the password wins, the other steps aside."""
    shadow_file = lock_root(hostroot, "*")
    app = ConsoleApp(backend(hostroot), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen))
        # The other console (another process) sets it meanwhile.
        shadow.set_password(shadow_file, "root", "serial-pw-1")
        await type_into(pilot, "new", "tty1-pw-22")
        await type_into(pilot, "again", "tty1-pw-22")
        await push(pilot, "#set")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen)
                    and on_screen(app, "set on another console meanwhile; it was kept"))
        assert shadow.verify(shadow_file, "root", "serial-pw-1")
        assert not shadow.verify(shadow_file, "root", "tty1-pw-22")


async def test_screen_leaves_by_itself_when_the_other_console_set_it(hostroot: Path) -> None:
    shadow_file = lock_root(hostroot, "")
    app = ConsoleApp(backend(hostroot), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen))
        shadow.set_password(shadow_file, "root", "serial-pw-1")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen)
                    and on_screen(app, "The root password was set on another console."), timeout=15)


async def test_memory_backend_never_asks() -> None:
    app = ConsoleApp(MemoryBackend(), refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        assert not any(isinstance(s, FirstBootPasswordScreen) for s in app.screen_stack)


async def test_the_console_asking_for_the_first_password_is_ready_for_the_node(hostroot: Path,
                                                                               tmp_path: Path) -> None:
    """qx-node's health (and so a new slot's health gate) counts the console up while it asks."""
    import json
    import os

    lock_root(hostroot)
    ready = tmp_path / "ready" / "ttyS0.ready"
    app = ConsoleApp(backend(hostroot), refresh_s=3600, ready_file=ready)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen))
        await until(pilot, ready.exists)
        assert json.loads(ready.read_text())["pid"] == os.getpid()
