"""The documented nginx front (update_server/deploy/nginx-qx-update-server.conf), run for real.

nginx serves the repository directory of a running qx-update-server and proxies check-ins to its public
listener; python-tuf's ngclient verifies the repository through nginx, a check-in through nginx lands in
the fleet, and nothing of the admin API, the admin page or other files is reachable. Needs Debian's
``nginx-light`` (or ``nginx``); fails without it rather than skipping (the example would go unproven).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import requests

from .conftest import ALL, ROOT, Server, free_port, qx_release, start_server, verify_repo

EXAMPLE = ROOT / "update_server" / "deploy" / "nginx-qx-update-server.conf"


def test_nginx_front(tmp_path, make_release):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is not installed: apt-get install -y nginx-light"
    admin_port = free_port()
    s = start_server(tmp_path / "data", extra_args=["--admin-listen", f"127.0.0.1:{admin_port}"])
    admin = s.url.rsplit(":", 1)[0] + f":{admin_port}"
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    public_port = s.url.rsplit(":", 1)[1]
    server_block = EXAMPLE.read_text() \
        .replace("listen 80;", f"listen 127.0.0.1:{port};") \
        .replace("/srv/qx-updates/repository", str(s.data_dir / "repository")) \
        .replace("http://127.0.0.1:8400", f"http://127.0.0.1:{public_port}")
    assert str(s.data_dir) in server_block and f":{public_port}" in server_block
    user = "user root;" if os.geteuid() == 0 else ""
    (work / "nginx.conf").write_text(f"""{user}
worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; include /etc/nginx/mime.types; default_type application/octet-stream;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
{server_block}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)], stderr=subprocess.PIPE)
    front = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(front + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (work / "error.log").read_text()
            time.sleep(0.05)
        token = s.token(*ALL)
        h = {"Authorization": f"Bearer {token}"}
        requests.post(admin + "/v1/keys/init", json={}, headers=h, timeout=10).raise_for_status()
        qx_release(Server(admin, s.data_dir, s.proc, s.log), token, "publish", str(make_release("0.2.0")))
        root_v1 = requests.get(front + "/metadata/1.root.json", timeout=5).content
        got = verify_repo(front, root_v1, tmp_path)
        assert set(got) == {"0.2.0/quantix-os_0.2.0.root.erofs.zst", "0.2.0/quantix-os_0.2.0.efi"}
        ts = requests.get(front + "/metadata/timestamp.json", timeout=5)
        assert ts.headers["content-type"] == "application/json" and ts.headers["cache-control"] == "no-cache"
        snap = requests.get(front + "/metadata/2.snapshot.json", timeout=5)
        assert "immutable" in snap.headers["cache-control"]
        body = {"host_id": "n1", "version": "0.1.0", "slot": "a", "channel": "dev", "health": "good"}
        r = requests.post(front + "/v1/checkin", json=body, timeout=5,
                          headers={"Authorization": f"Bearer {s.token('checkin')}"})
        assert r.status_code == 204
        assert [x["host_id"] for x in requests.get(admin + "/v1/fleet", headers=h, timeout=5).json()["hosts"]] == ["n1"]
        for path in ("/admin", "/admin/static/admin.js", "/v1/releases", "/v1/fleet", "/metadata/",
                     "/targets/", "/targets/0.2.0/", "/metadata/../server.db", "/server.db", "/keys/online/"):
            assert requests.get(front + path, headers=h, timeout=5).status_code == 404, path
        big = requests.post(front + "/v1/checkin", data=b"x" * (100 << 10), timeout=10,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert big.status_code == 413
    finally:
        proc.terminate()
        proc.wait(10)
        s.stop()
