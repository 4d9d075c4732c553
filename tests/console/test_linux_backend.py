"""The real backend against a temporary host root: status from /proc, the ESP and a real HTTP qx-node
on 127.0.0.1; qx-update absent or present (a script speaking its documented --json output)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qx_console.backend import Unavailable
from qx_console.clients import NodeClient, UpdateClient
from qx_console.hostconfig import HostConfig, SshConfig
from qx_console.linux import LinuxBackend


class _Node(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            body = {"status": "ok", "version": "1.2.3",
                    "components": {"libvirt": {"ok": True, "detail": "test:///default"}}}
        elif self.path == "/v1/vms" and self.headers.get("Authorization") == "Bearer tok":
            body = [{"name": "a", "state": "running"}, {"name": "b", "state": "shutoff"}]
        else:
            self.send_response(401)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def node_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_status_with_node_up_and_qx_update_absent(hostroot: Path, node_url: str) -> None:
    (hostroot / "token").write_text("tok\n")
    be = LinuxBackend(hostroot, node=NodeClient(node_url, None, hostroot / "token"),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    st = be.status()
    assert (st.product, st.version, st.hostname) == ("Quantix OS", "1.2.3", "qx-test")
    assert (st.active_slot, st.blessed) == ("A", True)
    assert st.vms_running == 1 and st.node.ok and st.libvirt.ok
    assert st.mem_total == 2048000 * 1024 and st.uptime_s == 3725.5
    assert st.update_detail.startswith("not available: '/nonexistent/qx-update' is not installed")


def test_status_with_node_down(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    st = be.status()
    assert st.node.ok is None and "unreachable" in st.node.detail and st.vms_running is None


def test_qx_update_json_is_parsed_and_apply_streams_progress(tmp_path: Path, hostroot: Path) -> None:
    script = tmp_path / "qx-update"
    script.write_text("""#!/bin/sh
[ "$1" = --json ] || { echo "qx-update: error: --json comes first" >&2; exit 2; }
case "$2" in
status) echo '{"channel":"stable","active_slot":"a","slots":{"a":{"version":"1.2.3","blessed":true},
 "b":{"version":"","blessed":null}},"available":""}' ;;
apply) echo '{"done":1,"total":4}'; echo '{"done":4,"total":4}'; echo '{"message":"installed"}' ;;
rollback) echo '{"error":"slot b is empty"}'; exit 1 ;;
esac
""")
    script.chmod(0o755)
    be = LinuxBackend(hostroot, updates=UpdateClient([str(script)]))
    st = be.update_status()
    assert st.channel == "stable" and [(s.name, s.active, s.blessed) for s in st.slots] == [
        ("a", True, True), ("b", False, None)]
    seen: list[float] = []
    assert be.update_apply(lambda f, m: seen.append(f)) == "installed"
    assert seen == [0.0, 0.25, 1.0, 1.0]
    with pytest.raises(Exception, match="slot b is empty"):
        be.update_rollback()


def test_absent_qx_update_is_unavailable(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, updates=UpdateClient(["qx-update-not-installed"]))
    with pytest.raises(Unavailable, match="not installed"):
        be.update_status()


def test_save_config_and_reset(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, updates=UpdateClient(["/nonexistent/qx-update"]))
    cfg = HostConfig(hostname="qx-test", ssh=SshConfig(False, 15))
    be.save_config(cfg, ("ssh",))
    assert be.load_config() == (cfg, {"ssh": "console"})
    be.reset_config()
    assert be.load_config() == (HostConfig(), {})


def test_root_password_through_backend(hostroot: Path) -> None:
    be = LinuxBackend(hostroot)
    assert be.verify_root_password("quantix-pw") and not be.verify_root_password("nope")
    be.set_root_password("a-new-password")
    assert be.verify_root_password("a-new-password")


@pytest.mark.anyio
async def test_app_on_the_real_backend(hostroot: Path, node_url: str, tmp_path: Path) -> None:
    """The whole app over LinuxBackend: status from the temp root, F2 checks the shadow file there."""
    from qx_console.app import ConsoleApp
    from qx_console.customize import CustomizeScreen, LoginScreen

    from .helpers import on_screen, until

    (hostroot / "token").write_text("tok\n")
    be = LinuxBackend(hostroot, node=NodeClient(node_url, None, hostroot / "token"),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    ready = tmp_path / "ready/tty1.ready"
    app = ConsoleApp(be, ready_file=ready, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "Quantix OS 1.2.3") and on_screen(app, "VMs running   1"))
        assert on_screen(app, "qx-test") and ready.exists()
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: on_screen(app, "root password: incorrect"))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
