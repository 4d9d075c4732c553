"""The real ``qx-node serve`` command, run as a subprocess against libvirt's ``test:///default``.

The other node tests serve the app in-process (``LiveServer``); these prove what the operator and
the systemd unit get: first start writes ``api-token`` (0600) and ``tls/`` under ``--state-dir``,
HTTPS verified against ``tls/cert.pem``, bearer auth, a restart keeps the token and certificate,
bad flags are one ``error:`` + ``hint:`` (no traceback) and SIGTERM is a clean stop (exit 0).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.node.conftest import free_port, wait_for

START_TIMEOUT = 60.0  # the first start creates a key and imports libvirt; CI hosts may be busy
STOP_TIMEOUT = 15.0  # uvicorn closes open streams after 3 s (timeout_graceful_shutdown)


def _command() -> list[str]:
    """The installed console script, else ``python -m`` of the package its entry point lives in."""
    script = Path(sys.executable).parent / "qx-node"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "qx_node"]  # pyproject: qx-node = "qx_node.cli:main" (qx_node/__main__.py)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("QX_DEBUG", None)  # tracebacks would be shown on purpose with it
    return env


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    state: Path
    stderr_path: Path

    @property
    def cert(self) -> Path:
        return self.state / "tls" / "cert.pem"

    @property
    def key(self) -> Path:
        return self.state / "tls" / "key.pem"

    @property
    def token_path(self) -> Path:
        return self.state / "api-token"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.cert)), timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait (bounded) for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qx-node did not stop within {STOP_TIMEOUT} s of SIGTERM:\n{self.stderr()}") from None


class Runner:
    """Starts ``qx-node serve`` processes; every one is killed at teardown, whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.pool = tmp / "pool"
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_command(), *args], capture_output=True, text=True, env=_env(), timeout=timeout)

    def start(self, uri: str = "test:///default", argv: list[str] | None = None, state: Path | None = None,
              port: int | None = None) -> Served:
        """``qx-node serve`` with our usual flags, or with ``argv`` (then ``state`` and ``port`` say
        where its --state-dir and --listen point)."""
        port = port or free_port()
        state = state or self.state
        n = len(self.procs)
        out, err = self.tmp / f"serve-{n}.out", self.tmp / f"serve-{n}.err"
        if argv is None:
            argv = ["serve", "--listen", f"127.0.0.1:{port}", "--libvirt-uri", uri,
                    "--state-dir", str(state), "--pool-dir", str(self.pool), "--no-console-check"]
        with out.open("wb") as o, err.open("wb") as e:  # files, not pipes: a full pipe would block the server
            proc = subprocess.Popen([*_command(), *argv], stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=_env())
        self.procs.append(proc)
        served = Served(proc, f"https://127.0.0.1:{port}", port, state, err)

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"qx-node serve exited with {proc.returncode}:\n{served.stderr()}")
            if not served.cert.exists():
                return False
            try:
                with served.client() as c:
                    c.get(f"{served.url}/health")  # any answer: 503 would still be a served, verified response
            except (httpx.TransportError, ssl.SSLError, OSError):
                return False
            return True

        wait_for(answers, START_TIMEOUT, f"GET /health on {served.url} (verified against {served.cert})")
        return served

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _served_fingerprint(port: int, cafile: Path) -> bytes:
    """SHA-256 of the certificate the server actually presents (verified against ``cafile``)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())


def _file_fingerprint(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA256())


def test_first_start_writes_token_and_tls_and_serves_https_with_auth(runner: Runner) -> None:
    assert not runner.state.exists()
    node = runner.start()

    for secret in (node.token_path, node.key):
        assert _mode(secret) == 0o600, f"{secret} is {oct(_mode(secret))}"
        assert secret.stat().st_uid == os.getuid()
    token = node.token_path.read_text().strip()
    assert len(token) >= 32

    cert = x509.load_pem_x509_certificate(node.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert _served_fingerprint(node.port, node.cert) == cert.fingerprint(hashes.SHA256())

    with node.client() as c:
        assert c.get(f"{node.url}/health").status_code in (200, 503)
        r = c.get(f"{node.url}/v1/host")
        assert r.status_code == 401 and r.json()["field"] == "Authorization"
        assert c.get(f"{node.url}/v1/host", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.get(f"{node.url}/v1/host", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["hostname"]
    with pytest.raises(httpx.ConnectError):  # not trusted without our certificate
        httpx.get(f"{node.url}/health", timeout=10)


def test_restart_keeps_token_and_certificate(runner: Runner) -> None:
    first = runner.start()
    token = first.token_path.read_text()
    key = first.key.read_bytes()
    fingerprint = _file_fingerprint(first.cert)
    assert first.stop() == 0

    second = runner.start()
    assert second.token_path.read_text() == token
    assert second.key.read_bytes() == key
    assert _file_fingerprint(second.cert) == fingerprint
    assert _served_fingerprint(second.port, second.cert) == fingerprint
    with second.client() as c:
        assert c.get(f"{second.url}/v1/host", headers={"Authorization": f"Bearer {token.strip()}"}).status_code == 200
    assert second.stop() == 0


def test_sigterm_stops_cleanly(runner: Runner) -> None:
    node = runner.start()
    with node.client() as c:  # a served request first: the stop is of a working server
        assert c.get(f"{node.url}/health").status_code in (200, 503)
    rc = node.stop()
    err = node.stderr()
    assert rc == 0, f"exit {rc} after SIGTERM:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    with pytest.raises(httpx.ConnectError):  # the port is closed
        httpx.get(f"{node.url}/health", verify=str(node.cert), timeout=5)


@pytest.mark.parametrize("case", ["listen-nonsense", "state-dir-is-a-file", "state-dir-under-a-file"])
def test_bad_flags_are_one_error_and_a_hint(runner: Runner, case: str) -> None:
    a_file = runner.tmp / "a-file"
    a_file.write_text("not a directory\n")
    flags = {"--listen": f"127.0.0.1:{free_port()}", "--state-dir": str(runner.state)}
    flag = {"listen-nonsense": "--listen", "state-dir-is-a-file": "--state-dir",
            "state-dir-under-a-file": "--state-dir"}[case]
    flags[flag] = {"listen-nonsense": "nonsense", "state-dir-is-a-file": str(a_file),
                   "state-dir-under-a-file": str(a_file / "state")}[case]

    r = runner.run("serve", *(x for kv in flags.items() for x in kv), "--libvirt-uri", "test:///default",
                   "--pool-dir", str(runner.pool), "--no-console-check")

    assert r.returncode != 0
    lines = r.stderr.splitlines()
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and flag in errors[0], r.stderr
    assert "internal error" not in errors[0], r.stderr
    assert any("hint:" in ln for ln in lines), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert a_file.read_text() == "not a directory\n"  # nothing written over it


def test_unwritable_tls_dir_is_an_error_not_a_bug(runner: Runner) -> None:
    runner.state.mkdir()
    (runner.state / "tls").write_text("in the way\n")  # tls/ cannot be created

    r = runner.run("serve", "--listen", f"127.0.0.1:{free_port()}", "--libvirt-uri", "test:///default",
                   "--state-dir", str(runner.state), "--pool-dir", str(runner.pool), "--no-console-check")

    assert r.returncode == 3, r.stderr  # EnvironmentError_: the machine, not a bug (70)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "TLS" in errors[0] and "internal error" not in errors[0], r.stderr
    assert any("hint:" in ln and "--state-dir" in ln for ln in r.stderr.splitlines()), r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_sigterm_ends_event_streams_at_once(runner: Runner) -> None:
    """Open SSE streams are ended when the stop begins (not cut after the 3 s grace)."""
    node = runner.start()
    token = node.token_path.read_text().strip()
    lines: list[str] = []
    ended: dict[str, object] = {}
    first = threading.Event()

    def read() -> None:
        try:
            with node.client() as c, c.stream("GET", f"{node.url}/v1/events",
                                             headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if line.startswith("data: "):
                        first.set()
            ended["clean"] = True
        except httpx.HTTPError as e:
            ended["error"] = repr(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert first.wait(20), lines
    start = time.monotonic()
    rc = node.stop()
    took = time.monotonic() - start
    t.join(10)
    assert rc == 0, node.stderr()
    assert took < 2.0, f"SIGTERM took {took:.1f} s with an open event stream"
    assert ended == {"clean": True}, ended  # the stream ended properly, it was not cut
    assert "Traceback" not in node.stderr(), node.stderr()


def test_sigterm_is_prompt_while_libvirtd_hangs(runner: Runner) -> None:
    from tests.node.test_liveness import SilentLibvirtd

    sock = runner.tmp / "libvirt-sock"
    silent = SilentLibvirtd(sock)
    try:
        node = runner.start(uri=f"qemu+unix:///system?socket={sock}")
        with node.client() as c:
            body = c.get(f"{node.url}/health").json()
        assert body["components"]["libvirt"]["ok"] is False
        start = time.monotonic()
        rc = node.stop()
        took = time.monotonic() - start
        assert rc == 0, node.stderr()
        assert took < 3.5, f"SIGTERM took {took:.1f} s while libvirtd hung"
    finally:
        silent.close()


def _readme_dev_command() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"For development: `qx-node (serve [^`]+)`", readme)
    assert m, "README.md no longer shows a development command for qx-node"
    return m.group(1).split()


def test_health_is_ok_for_the_readmes_development_command(runner: Runner) -> None:
    """The README's own command (only its port and directories moved into the test's tmp)."""
    from qx_common.version import IMAGE_ID, os_release

    if os_release().get("IMAGE_ID") == IMAGE_ID:
        pytest.skip("on a Quantix OS host the console is checked, as it should be")
    argv = _readme_dev_command()
    assert "--no-console-check" not in argv
    port = free_port()
    state = runner.tmp / "qxn"
    flags = {"--listen": f"127.0.0.1:{port}", "--state-dir": str(state), "--pool-dir": str(state / "pool")}
    argv = [flags.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    node = runner.start(argv=argv, state=state, port=port)
    with node.client() as c:
        r = c.get(f"{node.url}/health")
    assert r.status_code == 200, r.text
    assert r.json()["components"]["console"]["detail"].startswith("not checked (not a Quantix OS host"), r.text
    assert node.stop() == 0
