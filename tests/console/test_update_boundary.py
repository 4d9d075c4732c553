"""The console ↔ qx-update boundary with the real qx-update: the console's UpdateClient runs the real
CLI (``python -m qx_update --config … --json …``, a subprocess) against a host made of files — an ESP
directory, two slot images, a state directory — and a real signed TUF repository served on 127.0.0.1.
Every state the console shows (never checked, up to date, available, check failed, installed awaiting a
reboot, on trial, blessed) is produced by qx-update itself; nothing here writes qx-update's JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qx_common.errors import ExternalError
from qx_console.clients import NodeClient, UpdateClient
from qx_console.linux import LinuxBackend
from tests.updates.conftest import Host, make_host, payload
from tests.updates.httpserver import serve
from tests.updates.tufrepo import TufRepo

ALL = ["dev", "beta", "stable"]


@dataclass
class QxUpdate:
    host: Host
    repo: TufRepo
    client: UpdateClient


@pytest.fixture
def qx(tmp_path: Path) -> Iterator[QxUpdate]:
    repo = TufRepo(tmp_path / "repo")
    served = serve(repo.base)
    host = make_host(tmp_path / "update-host", repo.root_bytes, served.url)
    yield QxUpdate(host, repo, UpdateClient([sys.executable, "-m", "qx_update", "--config", str(host.config)],
                                            timeout_s=120))
    served.close()


def _backend(hostroot: Path, qx: QxUpdate) -> LinuxBackend:
    return LinuxBackend(hostroot, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5), updates=qx.client)


def test_status_check_apply_and_cancel_through_the_real_qx_update(hostroot: Path, qx: QxUpdate) -> None:
    be = _backend(hostroot, qx)
    st = be.update_status()
    assert st.channel == "stable" and [(s.name, s.version, s.active, s.blessed) for s in st.slots] == [
        ("a", "1.0.0", True, True), ("b", "", False, False)]
    assert (st.available, st.pending, st.last_check) == ("", "", "")
    hs = be.status()
    assert (hs.active_slot, hs.blessed) == ("A", True)          # the blessing as qx-update reads the ESP
    assert (hs.update_check, hs.update_detail) == ("", "")

    qx.repo.add_release("1.1.0", slot_bytes=payload(11), channels=ALL)
    st = be.update_check()
    assert (st.available, st.pending, st.last_check) == ("1.1.0", "", "available")

    seen: list[float] = []
    msg = be.update_apply(lambda f, m: seen.append(f))
    assert msg.startswith("installed 1.1.0 into slot B") and seen[0] == 0.0 and seen[-1] == 1.0
    assert len(seen) > 3 and all(0.0 <= f <= 1.0 for f in seen)   # a line per percent per phase (4 MiB chunks)
    st = be.update_status()
    assert (st.available, st.pending) == ("", "1.1.0")
    assert [(s.name, s.version, s.blessed) for s in st.slots] == [("a", "1.0.0", True), ("b", "1.1.0", False)]

    assert be.update_rollback() == "cancelled the update to 1.1.0; slot A stays"
    st = be.update_status()
    assert st.pending == "" and [s.bad for s in st.slots] == [False, True]


def test_a_refusal_carries_qx_updates_own_message(hostroot: Path, qx: QxUpdate) -> None:
    be = _backend(hostroot, qx)
    with pytest.raises(ExternalError, match="qx-update rollback failed: slot B holds no bootable release"):
        be.update_rollback()
    qx.host.write_config(server_url="http://127.0.0.1:9/")
    with pytest.raises(ExternalError, match="qx-update check failed: cannot fetch update metadata"):
        be.update_check()
    st = be.update_status()
    assert st.last_check == "error" and st.available == ""


def test_up_to_date_and_on_trial(hostroot: Path, qx: QxUpdate) -> None:
    be = _backend(hostroot, qx)
    assert be.update_check().last_check == "up-to-date"
    qx.repo.add_release("1.1.0", slot_bytes=payload(12), channels=ALL)
    be.update_apply(lambda f, m: None)
    qx.host.write_config(running="b")                 # booted into the new slot, not blessed yet
    st = be.update_status()
    assert st.pending == "" and st.available == "" and "on trial" in st.detail
    assert [(s.name, s.active, s.blessed) for s in st.slots] == [("a", False, True), ("b", True, False)]
    assert be.status().blessed is False


@pytest.mark.anyio
async def test_status_screen_says_what_qx_update_found(hostroot: Path, qx: QxUpdate) -> None:
    """The Updates line follows qx-update's status: not checked, up to date, a version its last check
    found 'available', then 'installed: reboot to start it' once apply wrote it."""
    from qx_console.app import ConsoleApp

    from .helpers import on_screen, until

    be = _backend(hostroot, qx)
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "Updates       channel stable; not checked yet"))
    be.update_check()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "Updates       channel stable; up to date"))
    qx.repo.add_release("1.1.0", slot_bytes=payload(13), channels=ALL)
    be.update_check()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "Updates       channel stable; 1.1.0 available"))
    be.update_apply(lambda f, m: None)
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "Updates       channel stable; 1.1.0 installed: reboot to start it"))
