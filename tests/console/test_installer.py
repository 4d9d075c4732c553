"""The interactive installer (qx-console --installer), driven by Pilot over the real screens.

The payload is a small but real one (``tests/install/conftest.py``: erofs root, systemd-boot, factory
/var, the image's partition definitions with small sizes); disks are real loop devices, listed by the
real :func:`qx_install.disks.list_disks` and written by the real engine. The installer only ever sees
the loop devices of the test (``only_disks``): never the machine's own disks. The host side (NICs,
restart) is the in-memory backend.
"""

from __future__ import annotations

import re

import argparse
from pathlib import Path

import pytest
from textual.widgets import Button, Input, OptionList

from qx_common.errors import UserError
from qx_console import cli
from qx_console.installer import LIVE, InstallerApp
from qx_console.installer_screens import (
    ConfirmScreen, DiskScreen, DoneScreen, FailureScreen, InstallNetworkScreen, ModeScreen, PasswordScreen,
    ProgressScreen, WelcomeScreen,
)
from qx_console.memory import MemoryBackend
from qx_console.ui import ALLOWED_GLYPHS
from tests.install.conftest import install_payload, loop_disk, make_payload  # noqa: F401 - fixtures

from .helpers import bad_glyphs, frame_text, on_screen, push, until

pytestmark = pytest.mark.anyio
SIZE = (80, 24)

# Keys that must never crash, quit or stop the installer, on any screen. Enter and Esc move between
# steps and are tested on their own.
MASH = ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f11", "f12", "ctrl+q", "ctrl+c", "ctrl+z", "ctrl+p",
        "ctrl+backslash", "ctrl+x", "ctrl+v", "up", "down", "pageup", "pagedown", "home", "end", "tab",
        "shift+tab", "left", "right", "space", "backspace", "delete", "a", "Z", "1", "question_mark", "slash"]


@pytest.fixture(autouse=True)
def _own_install_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's installs take a lock of their own: the machine-wide one (/run/quantix/install.lock)
    is also taken by the installs of tests/install running in parallel, which would refuse these."""
    from qx_install import engine
    monkeypatch.setattr(engine, "LOCK_FILE", tmp_path / "install.lock")


def make_app(payload_dir: Path | None, tmp_path: Path, **kw) -> tuple[InstallerApp, MemoryBackend]:
    be = MemoryBackend()
    media = [payload_dir] if payload_dir is not None else [tmp_path / "no-medium"]
    kw.setdefault("only_disks", ())
    kw.setdefault("boot_medium", ())
    kw.setdefault("status_file", tmp_path / "install-status.json")  # qx-install auto's, not this machine's
    app = InstallerApp(be, media_dirs=media, log_path=tmp_path / "install.log", **kw)
    return app, be


async def mash(pilot, app, screen_type: type) -> None:
    """Every key of MASH on the current screen: nothing crashes, quits or leaves the screen."""
    for key in MASH:
        await pilot.press(key)
        await pilot.pause()
        assert app.is_running, key
        assert isinstance(app.screen, screen_type), (key, app.screen)
    assert not app.errors, app.errors
    assert not bad_glyphs(app)


async def welcome(pilot, app) -> None:
    await until(pilot, lambda: isinstance(app.screen, WelcomeScreen) and app.payload is not None
                and on_screen(app, "This installs Quantix OS 0.9.1")
                and on_screen(app, "Nothing is written before you confirm"))


def unwrapped(text: str) -> str:
    """A dialog's text without blanks and borders: a long path wraps onto the next lines of the dialog."""
    return re.sub(r"[\s║]", "", text)


# -- welcome ------------------------------------------------------------------------------------------
async def test_welcome_shows_the_release_layouts_and_keys(install_payload, tmp_path: Path) -> None:
    app, _ = make_app(install_payload.dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        text = frame_text(app)
        for s in ("Quantix OS Installer - Step 1 of 7: Welcome", "us   English (US)", "uk   English (UK)",
                  "de   German", "fr   French", "Keyboard: English (US) (us)", "Install Quantix OS",
                  "Live: try without installing", "F10 Install", "F9 Live",
                  "Nothing is written before you confirm"):
            assert s in text, s
        assert not bad_glyphs(app)
        assert app.screen.query_one("#layouts", OptionList).has_focus
        await pilot.press("escape")
        await until(pilot, lambda: on_screen(app, "This is the first step."))
        assert isinstance(app.screen, WelcomeScreen)
        await mash(pilot, app, WelcomeScreen)


async def test_the_installer_reports_its_console_ready_like_the_status_console(install_payload,
                                                                            tmp_path: Path) -> None:
    """On the ISO the installer is the console of tty1/ttyS0: qx-node's health reads the same file."""
    import json as _json
    import os as _os

    ready = tmp_path / "run" / "ttyS0.ready"
    app, _ = make_app(install_payload.dir, tmp_path, ready_file=ready)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        await until(pilot, ready.exists)
        assert _json.loads(ready.read_text())["pid"] == _os.getpid()


async def test_layout_is_applied_at_once(install_payload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enter on a layout runs loadkeys (kbd; a stand-in records the call) and keeps the choice."""
    import os

    record = tmp_path / "loadkeys.args"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/loadkeys").write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    (tmp_path / "bin/loadkeys").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    app, _ = make_app(install_payload.dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        await pilot.press("down", "down", "enter")  # us, uk, [de]
        await until(pilot, lambda: record.exists() and on_screen(app, "Keyboard: German (de)"))
        assert record.read_text() == "de\n" and app.choices.keyboard == "de"
        assert app.screen.query_one("#install", Button).has_focus  # next: Enter installs
        assert "(not on this terminal:" not in frame_text(app)


async def test_layout_without_kbd_is_a_note_not_an_error(install_payload, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    app, _ = make_app(install_payload.dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        await pilot.press("up", "enter")  # from us, the first, up wraps to the last: fr
        await until(pilot, lambda: on_screen(app, "Keyboard: French (fr)") and on_screen(app, "(not on this terminal:"))
        assert app.choices.keyboard == "fr" and not app.errors and not bad_glyphs(app)


@pytest.mark.parametrize("how", ["f9", "button"])
async def test_live_choice_ends_the_installer_with_live(install_payload, tmp_path: Path, how: str) -> None:
    app, _ = make_app(install_payload.dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        if how == "f9":
            await pilot.press("f9")
        else:
            await push(pilot, "#live")
        await until(pilot, lambda: not app.is_running)
    assert app.return_value == LIVE


async def test_without_a_payload_nothing_can_be_installed_but_live_works(tmp_path: Path) -> None:
    app, _ = make_app(None, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "No installation payload:"))
        assert "no installation payload found" in frame_text(app)
        assert app.screen.query_one("#install", Button).disabled
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Nothing can be installed from this medium"))
        assert isinstance(app.screen, WelcomeScreen) and not bad_glyphs(app)
        await mash(pilot, app, WelcomeScreen)
        await pilot.press("f9")
        await until(pilot, lambda: not app.is_running)
    assert app.return_value == LIVE


# -- qx-console: which app starts ---------------------------------------------------------------------
def _args(root: Path, *argv: str) -> argparse.Namespace:
    return cli.parser().parse_args(["--root", str(root), *argv])


@pytest.mark.parametrize("cmdline,argv,installer", [
    ("root=PARTLABEL=root-a ro", [], False),
    ("root=PARTLABEL=root-a ro", ["--installer"], True),
    ("quantix.live=1 console=ttyS0", [], True),
    ("quantix.live=1 console=ttyS0", ["--demo"], False),
    ("quantix.live=10", [], False),
])
def test_which_app_starts(tmp_path: Path, cmdline: str, argv: list[str], installer: bool) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(cmdline + "\n")
    assert cli.wants_installer(_args(tmp_path, *argv)) is installer


def test_installer_and_demo_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--installer cannot be combined with --demo"):
        cli.wants_installer(_args(tmp_path, "--installer", "--demo"))


def test_no_cmdline_is_not_live(tmp_path: Path) -> None:
    assert not cli.live_system(tmp_path)


# -- disks, the steps after, and the install itself (real loop devices, real engine) -----------------------
def wait_screen(pilot, app, screen_type: type, extra=lambda: True, timeout: float = 20.0):
    return until(pilot, lambda: isinstance(app.screen, screen_type) and extra(), timeout=timeout)


def form_ready(app) -> bool:
    """The network form is mounted and relabelled for the installer."""
    b = app.screen.query("#apply")
    return bool(b) and "Continue (F10)" in str(b.first(Button).label)


async def to_disks(pilot, app) -> None:
    await welcome(pilot, app)
    await pilot.press("f10")
    await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)


async def set_field(pilot, wid: str, text: str) -> None:
    inp = pilot.app.screen.query_one(f"#{wid}", Input)
    inp.focus()
    inp.value = ""
    await pilot.pause()
    if text:
        await pilot.press(*text)


async def passwords(pilot, app, new: str, again: str) -> None:
    await set_field(pilot, "new", new)
    await set_field(pilot, "again", again)
    await pilot.press("enter")


async def to_password(pilot, app) -> None:
    await to_disks(pilot, app)
    await pilot.press("enter")
    await wait_screen(pilot, app, PasswordScreen)


async def to_network(pilot, app, password: str = "install-pw-1") -> None:
    await to_password(pilot, app)
    await passwords(pilot, app, password, password)
    await wait_screen(pilot, app, InstallNetworkScreen, lambda: form_ready(app))


async def static_network(pilot, app, hostname: str = "qx-inst-1") -> None:
    """eno1, static 192.0.2.10/24 via 192.0.2.1, DNS 192.0.2.53, the given hostname; F10."""
    scr = app.screen
    nic = scr.query_one("#nic", OptionList)
    nic.focus()
    await pilot.pause()
    while str(nic.get_option_at_index(nic.highlighted).id) != "eno1":
        await pilot.press("down")
    await push(pilot, "#v4mode")
    await until(pilot, lambda: str(scr.query_one("#v4mode", Button).label) == "static")
    for wid, value in (("v4addr", "192.0.2.10"), ("v4prefix", "24"), ("v4gw", "192.0.2.1"),
                       ("dns", "192.0.2.53"), ("hostname", hostname)):
        await set_field(pilot, wid, value)
    await pilot.press("f10")


async def to_confirm(pilot, app, hostname: str = "qx-inst-1") -> None:
    await to_network(pilot, app)
    await static_network(pilot, app, hostname)
    await wait_screen(pilot, app, ConfirmScreen, lambda: app.screen.plan is not None)


def usable_disk(path: str, min_bytes: int):
    from qx_install import disks
    return next(d for d in disks.list_disks(min_bytes=min_bytes, include=(path,)) if d.path == path)


def preinstall(payload, path: str, hostname: str = "old-host") -> None:
    """A disk that already holds Quantix OS, put there by the engine itself (as an earlier install did)."""
    from qx_install import engine

    from qx_console import shadow
    from qx_console.hostconfig import HostConfig
    disk = usable_disk(path, payload.min_disk_bytes)
    plan = engine.plan(disk, payload=payload, mode="wipe", host=HostConfig(hostname=hostname),
                       root_password_hash=shadow.hash_password("old-root-pw"), keyboard="us", keep_config=False)
    engine.execute(plan, None, log_path=None)


class Mounted:
    """The data partition of an installed loop disk, mounted read-only for the test to read."""

    def __init__(self, disk_path: str, tmp_path: Path) -> None:
        import subprocess
        self.dir = tmp_path / "mnt-data"
        self.dir.mkdir(exist_ok=True)
        import json
        # By its GPT name, as the installer finds it (its number depends on the layout: 6 with dm-verity).
        table = json.loads(subprocess.run(["sfdisk", "--json", disk_path], check=True, capture_output=True,
                                          text=True).stdout)["partitiontable"]["partitions"]
        data = next(p["node"] for p in table if p.get("name") == "quantix-data")
        subprocess.run(["mount", "-o", "ro", data, str(self.dir)], check=True)

    def __enter__(self) -> Path:
        return self.dir

    def __exit__(self, *exc) -> None:
        import subprocess
        subprocess.run(["umount", str(self.dir)], check=True)


async def test_disk_picker_refuses_the_boot_medium_and_a_too_small_disk(install_payload, loop_disk,
                                                                       tmp_path: Path) -> None:
    big, small, medium = loop_disk(300, "big"), loop_disk(100, "small"), loop_disk(300, "medium")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[big.path, small.path, medium.path],
                      boot_medium=[medium.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_disks(pilot, app)
        scr = app.screen
        assert {d.path for d in scr.disks} == {big.path, small.path, medium.path}
        text = frame_text(app)
        assert "1 of 3 disk(s) usable" in text
        assert "Cannot be used: it is the installation medium" in text
        small_disk = next(d for d in scr.disks if d.path == small.path)
        assert small_disk.unusable.startswith("is ") and "Quantix needs at least" in small_disk.unusable
        assert f"Cannot be used: it {small_disk.unusable}"[:60] in text
        assert "Step 2 of 7: Target disk" in text and "Enter Select" in text and not bad_glyphs(app)
        ol = scr.query_one("#disks", OptionList)
        # The highlight only ever rests on the usable disk; Enter takes it.
        for key in ("down", "up", "down", "down", "end", "home", "pagedown", "pageup"):
            await pilot.press(key)
            assert scr.disks[ol.highlighted].path == big.path, key
        await mash(pilot, app, DiskScreen)
        # R lists again (same disks, same choice).
        await pilot.press("r")
        await until(pilot, lambda: on_screen(app, "1 of 3 disk(s) usable"))
        await pilot.press("escape")
        await wait_screen(pilot, app, WelcomeScreen)
        await pilot.press("f10")
        await wait_screen(pilot, app, DiskScreen)
        await pilot.press("enter")
        await wait_screen(pilot, app, PasswordScreen)
        assert app.choices.disk.path == big.path and app.choices.mode == "wipe"


async def test_no_usable_disk_says_why(install_payload, loop_disk, tmp_path: Path) -> None:
    small = loop_disk(100, "small")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[small.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_disks(pilot, app)
        assert on_screen(app, "None of the 1 disk(s) can be used")
        await pilot.press("enter")
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "No disk can be chosen."))
        assert isinstance(app.screen, DiskScreen) and not app.errors


async def test_password_step_checks_policy_and_escape_goes_back(install_payload, loop_disk, tmp_path: Path) -> None:
    disk = loop_disk(300, "target")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_password(pilot, app)
        text = frame_text(app)
        assert "Step 4 of 7: Root password" in text and "F10 Continue" in text and not bad_glyphs(app)
        await mash(pilot, app, PasswordScreen)
        await passwords(pilot, app, "short", "short")
        await until(pilot, lambda: on_screen(app, "new password: is shorter than 8 characters"))
        await passwords(pilot, app, "install-pw-1", "install-pw-2")
        await until(pilot, lambda: on_screen(app, "confirm password: does not match the new password"))
        assert isinstance(app.screen, PasswordScreen) and app.choices.root_password_hash is None
        await pilot.press("escape")
        await wait_screen(pilot, app, DiskScreen)
        await pilot.press("enter")
        await wait_screen(pilot, app, PasswordScreen)
        # Enter in the first field moves to the second; Enter there continues.
        await set_field(pilot, "new", "install-pw-1")
        await pilot.press("enter")
        assert app.screen.query_one("#again", Input).has_focus
        await pilot.press(*"install-pw-1", "enter")
        await wait_screen(pilot, app, InstallNetworkScreen)
        from qx_console import shadow
        h = app.choices.root_password_hash
        assert h and h.startswith("$y$") and shadow.crypt("install-pw-1", h) == h


async def test_network_step_shows_field_errors_and_goes_back(install_payload, loop_disk, tmp_path: Path) -> None:
    disk = loop_disk(300, "target")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_network(pilot, app)
        scr = app.screen
        text = frame_text(app)
        assert "Step 5 of 7: Management network" in text and "F10 Continue" in text and not bad_glyphs(app)
        assert "Continue (F10)" in str(scr.query_one("#apply", Button).label)
        await mash(pilot, app, InstallNetworkScreen)
        nic = scr.query_one("#nic", OptionList)
        nic.focus()
        await pilot.pause()
        while str(nic.get_option_at_index(nic.highlighted).id) != "eno1":
            await pilot.press("down")
        await push(pilot, "#v4mode")
        await until(pilot, lambda: str(scr.query_one("#v4mode", Button).label) == "static")
        for wid, value in (("v4addr", "300.1.2.3"), ("v4prefix", "abc"), ("v4gw", "192.0.2.1"),
                           ("hostname", "bad_name!"), ("vlan", "5000")):
            await set_field(pilot, wid, value)
        await pilot.press("f10")
        await until(pilot, lambda: "300.1.2.3" in str(scr.query_one("#err-v4addr").render()))
        errors = {w: str(scr.query_one(f"#err-{w}").render()) for w in ("v4addr", "v4prefix", "hostname", "vlan")}
        assert "is not an IPv4 address" in errors["v4addr"]
        assert "network.ipv4.prefix" in errors["v4prefix"]
        assert "hostname" in errors["hostname"] and "illegal" in errors["hostname"]
        assert "network.vlan" in errors["vlan"]
        assert isinstance(app.screen, InstallNetworkScreen) and app.choices.host is None
        assert not bad_glyphs(app)
        # Esc: back to the password (typed again), then forward: the form is new but keeps nothing invalid.
        await pilot.press("escape")
        await wait_screen(pilot, app, PasswordScreen)
        await pilot.press("f10")
        await wait_screen(pilot, app, InstallNetworkScreen, lambda: form_ready(app))
        await static_network(pilot, app, "qx-inst-2")
        await wait_screen(pilot, app, ConfirmScreen)
        host = app.choices.host
        assert host.hostname == "qx-inst-2" and host.network.nic == "eno1"
        assert host.network.ipv4.address == "192.0.2.10" and host.network.dns == ("192.0.2.53",)
        assert not any("write_network" in c or "activate" in c for c in app.backend.calls)  # live system untouched


async def test_interactive_wipe_install_on_a_blank_loop_disk(install_payload, loop_disk, tmp_path: Path) -> None:
    disk = loop_disk(300, "target")
    app, be = make_app(install_payload.dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        await pilot.press("down", "down", "enter")  # German keyboard
        await until(pilot, lambda: app.choices.keyboard == "de")
        await pilot.press("f10")
        await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)
        await pilot.press("enter")
        await wait_screen(pilot, app, PasswordScreen)
        await passwords(pilot, app, "install-pw-1", "install-pw-1")
        await wait_screen(pilot, app, InstallNetworkScreen, lambda: form_ready(app))
        await static_network(pilot, app, "qx-inst-1")
        await wait_screen(pilot, app, ConfirmScreen, lambda: app.screen.plan is not None)
        text = frame_text(app)
        assert "Step 6 of 7: Confirm" in text and "ERASE the whole disk" in text and not bad_glyphs(app)
        assert "Wipe the disk and install" in text and disk.path in text
        assert not app.screen.query("#word")  # a blank disk: nothing to lose, no word to type
        await mash(pilot, app, ConfirmScreen)
        await push(pilot, "#install")
        # A small install may be done before the first poll: the progress screen or the next one.
        await until(pilot, lambda: isinstance(app.screen, (ProgressScreen, DoneScreen)), timeout=20)
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "is installed"), timeout=180)
        text = frame_text(app)
        assert "Quantix OS 0.9.1 is installed in slot A" in text
        assert "Remove the installation medium and press Enter" in text and not bad_glyphs(app)
        assert app.result.mode == "wipe" and app.result.version == "0.9.1" and app.result.slot == "a"
        assert (tmp_path / "install.log").read_text().strip()
        await pilot.press("escape")
        assert isinstance(app.screen, DoneScreen) and on_screen(app, "Quantix OS is installed. Remove")
        await mash(pilot, app, DoneScreen)
        assert not any(c.startswith("power") for c in be.calls)
        await pilot.press("enter")
        await until(pilot, lambda: "power reboot" in be.calls)
    # What was written: the disk holds a complete 0.9.1 named as typed, with the keyboard, the password
    # and the settings' source.
    d = usable_disk(disk.path, install_payload.min_disk_bytes)
    assert d.quantix is not None and d.quantix.version == "0.9.1" and d.quantix.complete
    assert d.quantix.hostname == "qx-inst-1"
    import json

    from qx_console import shadow
    with Mounted(disk.path, tmp_path) as var:
        cfg = var / "lib/quantix/config"
        assert (cfg / "vconsole.conf").read_text() == "KEYMAP=de\n"
        assert shadow.verify(cfg / "shadow", "root", "install-pw-1")
        stored = json.loads((cfg / "hostconfig.json").read_text())
        assert stored["network"]["ipv4"] == {"mode": "static", "address": "192.0.2.10", "prefix": 24,
                                             "gateway": "192.0.2.1"}
        prov = json.loads((cfg / "provenance.json").read_text())
        assert prov["hostname"] == prov["network.nic"] == prov["network.ipv4"] == prov["network.dns"] == "installer"
        assert "network.ipv6" not in prov and "ssh" not in prov  # not entered: still the factory default


async def test_the_progress_screen_draws_every_step(install_payload, loop_disk, tmp_path: Path) -> None:
    """While the engine works: a row per plan step with its bar, the current step named; Esc and any key
    do nothing. (Progress reports reach the screen from the engine's thread.)"""
    disk = loop_disk(300, "target")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[disk.path])
    seen: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await to_confirm(pilot, app)
        steps = app.screen.plan.steps()
        await push(pilot, "#install")
        await wait_screen(pilot, app, ProgressScreen)
        scr = app.screen
        while isinstance(app.screen, ProgressScreen):
            seen.append(frame_text(app))
            await pilot.press("escape", "ctrl+c", "ctrl+q", "f12")
            await pilot.pause(0.05)
            assert app.is_running
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "is installed"), timeout=180)
        assert [r.step for r in scr.board.rows] == steps and all(r.finished for r in scr.board.rows)
    assert seen and all(s in seen[0] for s in steps)  # every step listed from the start
    assert not {c for s in seen for c in s if ord(c) > 126 and c not in ALLOWED_GLYPHS}


def test_entered_fields_are_the_ones_that_differ_from_the_factory_default() -> None:
    from qx_console.hostconfig import HostConfig, IPv4Config, NetworkConfig
    from qx_console.installer import entered_fields
    assert entered_fields(HostConfig()) == ("hostname",)
    cfg = HostConfig(hostname="h1", network=NetworkConfig(nic="eno1", ipv4=IPv4Config("static", "192.0.2.10", 24),
                                                          dns=("192.0.2.53",)))
    assert entered_fields(cfg) == ("hostname", "network.nic", "network.ipv4", "network.dns")


def test_progress_board_rows() -> None:
    """What the progress screen draws, from the engine's reports (1-based step index of total)."""
    from qx_install.engine import Progress

    from qx_console.installer import ProgressBoard
    b = ProgressBoard.of(["verify medium", "prepare", "partition disk"])
    assert b.current is None and [r.fraction for r in b.rows] == [None, None, None]
    b.update(Progress("verify medium", 1, 3, 0, 0, "verify medium"))
    assert b.current.step == "verify medium" and b.rows[0].fraction is None and b.rows[0].started
    b.update(Progress("verify medium", 1, 3, 50, 200, "checking the installation medium"))
    assert b.rows[0].fraction == 0.25 and b.current.message == "checking the installation medium"
    b.update(Progress("partition disk", 3, 3, 1, 4, "repart"))
    assert [r.finished for r in b.rows] == [True, True, False] and b.rows[2].fraction == 0.25
    assert b.current.index == 3
    b.update(Progress("unplanned step", 4, 4, 0, 0, ""))  # steps the plan did not list are added
    assert [r.step for r in b.rows][-1] == "unplanned step" and b.total == 4
    b.finish()
    assert all(r.fraction == 1.0 for r in b.rows)


async def test_failure_shows_cause_step_and_log_and_leaves_the_disk_alone(loop_disk, tmp_path: Path) -> None:
    """A medium damaged after it was found: the engine's first step (verify) stops the install."""
    payload_dir = make_payload(tmp_path / "payload")
    disk = loop_disk(300, "target")
    app, be = make_app(payload_dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_confirm(pilot, app)
        data = payload_dir / "data.tar.zst"
        data.write_bytes(data.read_bytes()[:-1] + b"\0")
        await push(pilot, "#install")
        await wait_screen(pilot, app, FailureScreen, lambda: on_screen(app, "Cause:"), timeout=60)
        await until(pilot, lambda: on_screen(app, "Last lines of the log"))
        text = frame_text(app)
        assert "Cause: verify medium: installation medium: data.tar.zst does not match" in text
        assert "Step:  verify medium" in text and f"Log:{tmp_path / 'install.log'}" in unwrapped(text)
        assert "unchanged or marked incomplete" in text and not bad_glyphs(app)
        await mash(pilot, app, FailureScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, FailureScreen)
        await push(pilot, "#again")
        await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)
        assert app.screen_stack[-2].__class__ is WelcomeScreen
    d = usable_disk(disk.path, 0)
    assert not d.partitions and d.quantix is None  # not a byte was written
    assert "power reboot" not in be.calls


async def test_failure_screen_restart_and_shutdown(tmp_path: Path, loop_disk) -> None:
    payload_dir = make_payload(tmp_path / "payload")
    disk = loop_disk(300, "target")
    app, be = make_app(payload_dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_confirm(pilot, app)
        (payload_dir / "data.tar.zst").unlink()  # the medium lost a file: verification stops
        await push(pilot, "#install")
        await wait_screen(pilot, app, FailureScreen, lambda: on_screen(app, "Cause:"), timeout=60)
        await push(pilot, "#poweroff")
        await until(pilot, lambda: "power poweroff" in be.calls)
        await push(pilot, "#reboot")
        await until(pilot, lambda: "power reboot" in be.calls)


async def test_existing_install_choices_and_keep_data(install_payload, loop_disk, tmp_path: Path) -> None:
    disk = loop_disk(300, "target")
    preinstall(install_payload, disk.path, "old-host")
    app, _ = make_app(install_payload.dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await to_disks(pilot, app)
        assert on_screen(app, "holds Quantix OS 0.9.1 (host old-host)")
        await pilot.press("enter")
        await wait_screen(pilot, app, ModeScreen)
        text = frame_text(app)
        for s in ("Step 3 of 7: Existing installation", "Upgrade:", "Reinstall keeping data and host configuration",
                  "reset host configuration", "Wipe: erase the whole disk", "(host old-host)"):
            assert s in text, s
        assert not bad_glyphs(app)
        await mash(pilot, app, ModeScreen)
        await pilot.press("escape")
        await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)
        await pilot.press("enter")
        await wait_screen(pilot, app, ModeScreen)
        modes = app.screen.query_one("#modes", OptionList)

        async def pick(oid: str) -> None:
            modes.focus()
            await pilot.pause()
            while str(modes.get_option_at_index(modes.highlighted).id) != oid:
                await pilot.press("down")
            await pilot.press("enter")

        # Reset configuration: asks password and network; Esc twice is back here.
        await pick("reset")
        await wait_screen(pilot, app, PasswordScreen)
        assert (app.choices.mode, app.choices.keep_config) == ("keep-data", False)
        await pilot.press("escape")
        await wait_screen(pilot, app, ModeScreen)
        # Wipe: the confirm screen wants the word.
        await pick("wipe")
        await wait_screen(pilot, app, PasswordScreen)
        await passwords(pilot, app, "install-pw-1", "install-pw-1")
        await wait_screen(pilot, app, InstallNetworkScreen, lambda: form_ready(app))
        await pilot.press("f10")  # the defaults (DHCP on all adapters, hostname 'quantix') are valid
        await wait_screen(pilot, app, ConfirmScreen, lambda: app.screen.plan is not None)
        assert on_screen(app, "Type WIPE to erase") and on_screen(app, "old-host")
        await set_field(pilot, "word", "yes")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "confirmation: type WIPE"))
        assert isinstance(app.screen, ConfirmScreen)
        for _ in range(3):
            await pilot.press("escape")
        await wait_screen(pilot, app, ModeScreen)
        # Keep data and configuration: no password, no network; straight to confirm, then install.
        await pick("keep")
        await wait_screen(pilot, app, ConfirmScreen, lambda: app.screen.plan is not None)
        assert app.choices.root_password_hash is None and app.choices.host is None
        text = frame_text(app)
        assert "KEPT: the data partition" in text and "KEPT: the host configuration" in text
        assert not app.screen.query("#word")
        await push(pilot, "#install")
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "is installed"), timeout=180)
    d = usable_disk(disk.path, install_payload.min_disk_bytes)
    assert d.quantix is not None and d.quantix.hostname == "old-host" and d.quantix.complete


async def test_upgrade_skips_the_settings(loop_disk, tmp_path: Path) -> None:
    from qx_install import payload as payloadmod

    disk = loop_disk(300, "target")
    preinstall(payloadmod.open_payload(make_payload(tmp_path / "old", version="0.9.1")), disk.path, "up-host")
    new_dir = make_payload(tmp_path / "new", version="0.9.2")
    app, _ = make_app(new_dir, tmp_path, only_disks=[disk.path])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.payload is not None and on_screen(app, "Quantix OS 0.9.2"))
        await pilot.press("f10")
        await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)
        await pilot.press("enter")
        await wait_screen(pilot, app, ModeScreen)
        assert on_screen(app, "This medium installs 0.9.2")
        await pilot.press("enter")  # Upgrade is the first choice
        await wait_screen(pilot, app, ConfirmScreen, lambda: app.screen.plan is not None)
        assert on_screen(app, "from 0.9.1 to 0.9.2") and on_screen(app, "Upgrade (inactive slot)")
        await push(pilot, "#install")
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "is installed"), timeout=180)
        assert on_screen(app, "Quantix OS 0.9.2 is installed in slot B")


# -- unattended: the answer file's install, progress only ------------------------------------------------
async def test_unattended_install_shows_progress_and_follows_after(install_payload, loop_disk,
                                                                 tmp_path: Path) -> None:
    from qx_install import answer as answermod

    from qx_console import shadow
    disk = loop_disk(300, "target")
    ans = answermod.parse(f"""
hostname = "qx-auto-1"
[install]
mode = "wipe"
root_password_hash = '{shadow.hash_password("auto-pw-123")}'
keyboard = "fr"
after = "reboot"
[install.disk]
transport = "loop"
""")
    app, be = make_app(install_payload.dir, tmp_path, only_disks=[disk.path], answer=ans)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, app, ProgressScreen)
        assert on_screen(app, "Unattended installation")
        await pilot.press("escape", "ctrl+q", "ctrl+c")  # nothing interrupts it (it may be done already)
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "is installed"), timeout=180)
        await until(pilot, lambda: "power reboot" in be.calls)  # after = "reboot", nobody pressed a key
        assert not any(isinstance(s, (WelcomeScreen, DiskScreen, PasswordScreen)) for s in app.screen_stack)
    d = usable_disk(disk.path, install_payload.min_disk_bytes)
    assert d.quantix is not None and d.quantix.hostname == "qx-auto-1" and d.quantix.complete
    with Mounted(disk.path, tmp_path) as var:
        assert (var / "lib/quantix/config/vconsole.conf").read_text() == "KEYMAP=fr\n"
        import json
        assert json.loads((var / "lib/quantix/config/provenance.json").read_text())["hostname"] == "answer-file"


async def test_unattended_without_a_matching_disk_fails_with_the_candidates(install_payload, loop_disk,
                                                                          tmp_path: Path) -> None:
    from qx_install import answer as answermod

    disk = loop_disk(300, "target")
    ans = answermod.parse('[install]\nmode = "upgrade"\nafter = "none"\n[install.disk]\nserial = "NO-SUCH-DISK"\n')
    app, be = make_app(install_payload.dir, tmp_path, only_disks=[disk.path], answer=ans)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, app, FailureScreen, lambda: on_screen(app, "Cause:"), timeout=60)
        assert on_screen(app, "NO-SUCH-DISK") and not bad_glyphs(app)
        assert not any(c.startswith("power") for c in be.calls)


# -- qx-install auto (the ISO's unattended service, another process): the console follows it -----------------
def write_status(path: Path, **data) -> None:
    """As qx-install auto writes it (qx_install.cli._write_status: JSON, replaced atomically)."""
    import json
    import os
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def test_follows_qx_install_auto_from_the_welcome_screen(install_payload, tmp_path: Path) -> None:
    status = tmp_path / "install-status.json"
    app, be = make_app(install_payload.dir, tmp_path, status_file=status)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        # qx-install auto found an answer file and started (after the console did).
        write_status(status, state="running", step="verify medium", index=1, total=6, done=5, size=10,
                     message="checking the installation medium")
        await wait_screen(pilot, app, ProgressScreen, lambda: on_screen(app, "checking the installation medium"))
        text = frame_text(app)
        assert "Unattended installation (answer file)" in text and "Step 1 of 6: verify medium" in text
        assert "[###############...............]  50 %" in text and not bad_glyphs(app)
        for key in ("escape", "enter", "f9", "f10", "ctrl+q"):
            await pilot.press(key)
            assert isinstance(app.screen, ProgressScreen) and app.is_running
        write_status(status, state="running", step="partition disk", index=3, total=6, done=0, size=0,
                     message="partition disk")
        await until(pilot, lambda: on_screen(app, "Step 3 of 6: partition disk"))
        write_status(status, state="done", version="0.9.1", disk="/dev/vdb", after="reboot")
        await wait_screen(pilot, app, DoneScreen, lambda: on_screen(app, "Quantix OS 0.9.1 is installed on"))
        assert on_screen(app, "/dev/vdb")
        assert not any(c.startswith("power") for c in be.calls)  # the service reboots, as its answer says


async def test_a_failed_qx_install_auto_is_shown_then_the_interactive_installer(install_payload,
                                                                               tmp_path: Path) -> None:
    status = tmp_path / "install-status.json"
    log = tmp_path / "auto.log"
    log.write_text("12:00:00 step 2/6: prepare\n12:00:01 FAILED at 'plan': no disk matches\n")
    write_status(status, state="failed", step="plan", message="install.disk: no disk matches serial=X",
                 hint="the candidates are listed above", log=str(log))
    app, be = make_app(install_payload.dir, tmp_path, status_file=status)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, app, FailureScreen, lambda: on_screen(app, "Last lines of the log"))
        text = frame_text(app)
        assert "Cause: install.disk: no disk matches serial=X" in text and "Step:  plan" in text
        assert f"Log:{log}" in unwrapped(text) and "FAILED at 'plan'" in text and not bad_glyphs(app)
        await push(pilot, "#again")
        await wait_screen(pilot, app, DiskScreen, lambda: app.screen.listed)
        # The same (failed) status is not followed a second time.
        await pilot.press("escape")
        await wait_screen(pilot, app, WelcomeScreen)
        await pilot.pause(0.2)
        assert isinstance(app.screen, WelcomeScreen) and app.followed


async def test_no_status_file_means_interactive(install_payload, tmp_path: Path) -> None:
    status = tmp_path / "install-status.json"
    status.write_text("{not json")  # being written / garbage: ignored
    app, _ = make_app(install_payload.dir, tmp_path, status_file=status)
    async with app.run_test(size=SIZE) as pilot:
        await welcome(pilot, app)
        await pilot.press("f10")
        await wait_screen(pilot, app, DiskScreen)
        assert not app.followed
