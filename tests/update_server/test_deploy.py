"""Deployment: HTTPS (operator's certificate or a self-signed one made on first start) and a public
listener separate from the admin one. Real server processes on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import time

import requests

from .conftest import ALL, Server, free_port, start_server, verify_repo


def wait_https(s: Server, url: str, verify: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1, verify=verify).ok:
                return
        except requests.ConnectionError:
            pass
        if s.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {s.log.read_text()[-2000:]}")
        time.sleep(0.05)


def test_self_signed_tls_and_its_fingerprint(tmp_path):
    data = tmp_path / "data"
    s = start_server(data, wait=False, extra_args=["--tls-self-signed"])
    cert = data / "tls" / "cert.pem"
    try:
        https = s.url.replace("http://", "https://")
        deadline = time.monotonic() + 30
        while not cert.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_https(s, https, str(cert))
        printed = re.search(r"SHA-256 fingerprint ([0-9A-F:]{95})", s.log.read_text()).group(1)
        openssl = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                                 capture_output=True, text=True, check=True).stdout
        assert printed in openssl and "created now" in s.log.read_text()
        assert oct((data / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
        # plain HTTP is not answered on the TLS port
        try:
            r = requests.get(s.url + "/healthz", timeout=5)
            assert r.status_code == 400
        except requests.ConnectionError:
            pass
        token = s.token(*ALL)
        h = {"Authorization": f"Bearer {token}"}
        requests.post(https + "/v1/keys/init", json={}, headers=h, timeout=10, verify=str(cert)).raise_for_status()
        assert requests.get(https + "/metadata/timestamp.json", timeout=5, verify=str(cert)).ok
    finally:
        s.stop()
    # the second start keeps the certificate (hosts pinned its fingerprint)
    before = cert.read_bytes()
    s2 = start_server(data, wait=False, extra_args=["--tls-self-signed"])
    try:
        wait_https(s2, s2.url.replace("http://", "https://"), str(cert))
        assert cert.read_bytes() == before and "created now" not in s2.log.read_text()
    finally:
        s2.stop()


def test_public_and_admin_listeners(tmp_path, make_release):
    admin_port = free_port()
    s = start_server(tmp_path / "data", extra_args=["--admin-listen", f"127.0.0.1:{admin_port}"])
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        token = s.token(*ALL)
        h = {"Authorization": f"Bearer {token}"}
        requests.post(admin + "/v1/keys/init", json={}, headers=h, timeout=10).raise_for_status()
        # the public listener: repository, health, check-ins — nothing of the admin API or page
        for path in ("/admin", "/admin/static/admin.js", "/v1/releases", "/v1/fleet", "/v1/audit"):
            r = requests.get(s.url + path, headers=h, timeout=5)
            assert r.status_code == 404 and "--admin-listen" in r.json()["hint"], path
        assert requests.post(s.url + "/v1/keys/rotate", headers=h, timeout=5).status_code == 404
        assert requests.get(s.url + "/healthz", timeout=5).ok
        body = {"host_id": "n1", "version": "0.1.0", "slot": "a", "channel": "dev", "health": "good"}
        assert requests.post(s.url + "/v1/checkin", json=body, timeout=5,
                             headers={"Authorization": f"Bearer {s.token('checkin')}"}).status_code == 204
        # the admin listener: everything
        assert requests.get(admin + "/admin", timeout=5).ok
        assert [x["host_id"] for x in requests.get(admin + "/v1/fleet", headers=h, timeout=5).json()["hosts"]] == ["n1"]
        root_v1 = requests.get(s.url + "/metadata/1.root.json", timeout=5).content
        assert verify_repo(s.url, root_v1, tmp_path) == {}
    finally:
        s.stop()
