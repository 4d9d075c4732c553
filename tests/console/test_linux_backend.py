"""The real backend against a temporary host root: status from /proc and a real HTTP qx-node on
127.0.0.1; qx-update absent (with the real qx-update: test_update_boundary.py); qx-node's certificate
and token as qx-node itself writes them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qx_common.errors import EnvironmentError_, UserError
from qx_console.backend import BackendUnavailable
from qx_console.clients import NodeClient, UpdateClient
from qx_console.hostconfig import HostConfig, SshConfig
from qx_console.linux import NODE_CERT, NODE_TOKEN, LinuxBackend


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
    assert (st.active_slot, st.blessed) == ("A", None)   # blessed or not is qx-update's to say (absent here)
    assert st.vms_running == 1 and st.node.ok and st.libvirt.ok
    assert st.mem_total == 2048000 * 1024 and st.uptime_s == 3725.5
    assert st.update_detail.startswith("not available: '/nonexistent/qx-update' is not installed")


def test_status_with_node_down(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    st = be.status()
    assert st.node.ok is None and "unreachable" in st.node.detail and st.vms_running is None


def test_absent_qx_update_is_unavailable(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, updates=UpdateClient(["qx-update-not-installed"]))
    with pytest.raises(BackendUnavailable, match="not installed"):
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


# -- qx-node's TLS certificate and API token ------------------------------------------------------------
def node_state(hostroot: Path) -> tuple[Path, Path, str]:
    """Let qx-node's own code write its identity into the host root, where the image's qx-node keeps it
    (``--state-dir /var/lib/quantix/node``): returns (cert.pem, api-token, token)."""
    from qx_node import settings as node_settings
    from qx_node.auth import ensure_token
    from qx_node.tls import ensure_cert

    state_dir = hostroot / node_settings.DEFAULT_STATE_DIR.relative_to("/")
    s = node_settings.Settings(host="127.0.0.1", port=8443, libvirt_uri="test:///default", state_dir=state_dir,
                               console_ready_dir=None)
    _, cert = ensure_cert(s.tls_dir)
    token = ensure_token(s.token_path)
    assert (cert, s.token_path) == (hostroot / NODE_CERT, hostroot / NODE_TOKEN)  # the paths the console reads
    return cert, s.token_path, token


def make_cert(path: Path) -> x509.Certificate:
    """A self-signed certificate made here, with known names and expiry."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qx-test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
            .not_valid_after(dt.datetime(2036, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("qx-test"), x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def der_sha256(pem: str) -> str:
    """The fingerprint computed without the backend's code: SHA-256 over the DER inside the PEM armour."""
    body = "".join(ln for ln in pem.splitlines() if ln and not ln.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).hexdigest().upper()


def test_node_certificate_written_by_qx_node(hostroot: Path) -> None:
    cert_path, _, _ = node_state(hostroot)
    nc = LinuxBackend(hostroot).node_certificate()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert nc.sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert nc.sha256.replace(":", "") == der_sha256(cert_path.read_text())
    assert len(nc.sha256) == 95 and {"localhost", "127.0.0.1", "::1"} <= set(nc.names)
    assert [len(line) for line in nc.fingerprint_lines()] == [47, 47]  # two lines fit an 80x24 screen


def test_node_certificate_names_and_expiry(hostroot: Path) -> None:
    cert = make_cert(hostroot / NODE_CERT)
    nc = LinuxBackend(hostroot).node_certificate()
    assert nc.sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert (nc.names, nc.not_after) == (("qx-test", "localhost", "127.0.0.1"), "2036-01-02")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_node_certificate_fingerprint_is_what_openssl_prints(hostroot: Path) -> None:
    make_cert(hostroot / NODE_CERT)
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(hostroot / NODE_CERT)],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out.lower().startswith("sha256 fingerprint=")
    assert LinuxBackend(hostroot).node_certificate().sha256 == out.split("=", 1)[1]


def test_node_api_token_written_by_qx_node(hostroot: Path) -> None:
    _, _, token = node_state(hostroot)
    assert LinuxBackend(hostroot).node_api_token() == token and len(token) >= 40


def test_node_identity_missing_or_broken_names_the_file(hostroot: Path) -> None:
    be = LinuxBackend(hostroot)
    with pytest.raises(BackendUnavailable, match=r"TLS certificate yet \(.*/var/lib/quantix/node/tls/cert.pem is missing"):
        be.node_certificate()
    with pytest.raises(BackendUnavailable, match=r"API token yet \(.*/var/lib/quantix/node/api-token is missing"):
        be.node_api_token()
    (hostroot / NODE_CERT).parent.mkdir(parents=True)
    (hostroot / NODE_CERT).write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(EnvironmentError_, match=r"/var/lib/quantix/node/tls/cert.pem: not a PEM certificate"):
        be.node_certificate()
    (hostroot / NODE_TOKEN).write_text("\n")
    with pytest.raises(EnvironmentError_, match=r"/var/lib/quantix/node/api-token: the API token is empty"):
        be.node_api_token()


def test_status_carries_the_certificate_fingerprint(hostroot: Path) -> None:
    be = LinuxBackend(hostroot, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    st = be.status()
    assert st.node_cert is None and st.node_cert_detail == "not created yet (qx-node has not started)"
    cert = make_cert(hostroot / NODE_CERT)
    st = be.status()
    assert st.node_cert is not None and st.node_cert.sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()


@pytest.mark.anyio
async def test_app_shows_fingerprint_and_token_on_request_on_the_real_backend(hostroot: Path) -> None:
    """Status shows the fingerprint of the certificate qx-node wrote; the token appears only after
    F2 + root password + Node API + Show token."""
    from textual.widgets import OptionList

    from qx_console.app import ConsoleApp
    from qx_console.customize import CustomizeScreen, LoginScreen, NodeApiScreen

    from .helpers import frame_text, on_screen, push, until

    cert_path, _, token = node_state(hostroot)
    fp = x509.load_pem_x509_certificate(cert_path.read_bytes()).fingerprint(hashes.SHA256()).hex(":").upper()
    be = LinuxBackend(hostroot, node=NodeClient("http://127.0.0.1:9", None, None, timeout_s=0.5),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, f"API cert      SHA-256 {fp[:47]}"))
        assert fp[48:] in frame_text(app) and token not in frame_text(app)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        menu = app.screen.query_one("#menu", OptionList)
        menu.highlighted = menu.get_option_index("nodeapi")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, NodeApiScreen) and on_screen(app, fp[:47]))
        assert on_screen(app, fp[48:]) and token not in frame_text(app)
        await push(pilot, "#show")
        await until(pilot, lambda: on_screen(app, f"API token: {token}"))


def test_option_like_probe_targets_never_reach_a_command(hostroot: Path) -> None:
    """ping/getent are never started with an option-like target (the result says why)."""
    be = LinuxBackend(hostroot)
    r = be.ping("-f", "custom")
    assert not r.ok and "is not valid" in r.detail
    r = be.resolve("--help")
    assert not r.ok and "is not valid" in r.detail


def test_invalid_log_filter_is_an_error_not_no_entries(hostroot: Path) -> None:
    be = LinuxBackend(hostroot)
    with pytest.raises(UserError) as ei:
        be.logs("system", "([unclosed")
    assert ei.value.message.startswith("logs.filter: is not a valid pattern")


def test_restart_ssh_is_refused_while_ssh_access_is_off(hostroot: Path) -> None:
    """Services -> ssh must not turn SSH on behind its setting (checked before any systemctl)."""
    be = LinuxBackend(hostroot)
    assert be.load_config()[0].ssh.enabled is False
    with pytest.raises(UserError) as ei:
        be.restart_service("ssh")
    assert "SSH access is turned off" in ei.value.message and "SSH Access" in (ei.value.hint or "")
