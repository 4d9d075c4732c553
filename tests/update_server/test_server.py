"""The real service (uvicorn subprocess on 127.0.0.1) driven through qx-release and plain HTTP.

After every change python-tuf's ngclient verifies the repository through the server's public URLs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import requests

from qx_update_server.app import create_app, is_public, route_scope

from .conftest import ALL, Server, app_routes, qx_release, start_server, verify_repo


def test_every_protected_route_needs_a_token(server, tmp_path):
    routes = app_routes(create_app(tmp_path / "enum"))
    checked = 0
    for method, route in routes:
        path = re.sub(r"\{[^}]+\}", "x", route)
        if is_public(route) or is_public(path + "/"):
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            r = requests.request(method, server.url + path, headers=headers, timeout=5)
            assert r.status_code == 401, (method, path, headers, r.status_code)
        checked += 1
        # every protected route has its scope in the table AuthMiddleware checks before reading a body
        assert route_scope(method, path) is not None, (method, route)
    assert checked >= 12
    # the public part really is public
    assert requests.get(server.url + "/healthz", timeout=5).ok
    assert requests.get(server.url + "/admin", timeout=5).ok
    # a token without the scope gets 403
    read = server.token("read")
    r = requests.post(server.url + "/v1/keys/init", json={}, headers={"Authorization": f"Bearer {read}"}, timeout=5)
    assert r.status_code == 403


def test_release_lifecycle_through_cli(server, tmp_path, make_release, static_server):
    token = server.token(*ALL)
    out = json.loads(qx_release(server, token, "--json", "keys", "init", "--root-keys", "3", "--threshold", "2").stdout)
    assert out["roles"]["root"]["threshold"] == 2
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    assert verify_repo(server.url, root_v1, tmp_path) == {}

    p = qx_release(server, token, "publish", "--channel", "dev", "--notes", "hello", str(make_release("0.2.0")))
    assert "0.2.0: channels dev" in p.stdout and "uploading 0.2.0: 100 %" in p.stderr
    assert verify_repo(server.url, root_v1, tmp_path)["0.2.0/quantix-os_0.2.0.efi"]["notes"] == "hello"

    qx_release(server, token, "promote", "0.2.0", "--to", "beta")
    qx_release(server, token, "rollout", "0.2.0", "--percent", "10")
    got = verify_repo(server.url, root_v1, tmp_path)["0.2.0/quantix-os_0.2.0.root.erofs.zst"]
    assert got["channels"] == ["dev", "beta"] and got["rollout"]["fraction"] == "0.1"
    qx_release(server, token, "rollout", "0.2.0", "--pause")
    assert verify_repo(server.url, root_v1, tmp_path)[
        "0.2.0/quantix-os_0.2.0.root.erofs.zst"]["rollout"]["paused"] is True

    qx_release(server, token, "publish", str(make_release("0.3.0")))
    qx_release(server, token, "yank", "0.2.0")
    got = verify_repo(server.url, root_v1, tmp_path)
    assert got["0.2.0/quantix-os_0.2.0.efi"]["channels"] == [] and got["0.2.0/quantix-os_0.2.0.efi"]["yanked"]

    qx_release(server, token, "keys", "rotate")
    assert len(verify_repo(server.url, root_v1, tmp_path)) == 4  # a v1 host follows the rotation
    status = json.loads(qx_release(server, token, "--json", "keys", "status").stdout)
    assert status["roles"]["root"]["version"] == 2

    listing = json.loads(qx_release(server, token, "--json", "list").stdout)
    assert [r["version"] for r in listing["releases"]] == ["0.3.0", "0.2.0"]
    assert listing["releases"][0]["published_by"].startswith("test-")

    export = tmp_path / "usb"
    out = json.loads(qx_release(server, token, "--json", "export", str(export)).stdout)
    assert out["root_version"] == 2 and len(out["targets"]) == 8  # 2 artifacts + 2 chunk indexes per release
    # the export is a complete repository: any plain web server can serve it to hosts
    assert len(verify_repo(static_server(export), root_v1, tmp_path)) == 4
    audit = requests.get(server.url + "/v1/audit", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    assert [e["action"] for e in audit["entries"]][:3] == ["keys-rotate", "yank", "publish"]


def test_mismatch_refused_by_client_and_server(server, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    build = make_release("0.2.0")
    sums = build / "SHA256SUMS"
    sums.write_text(re.sub(r"^[0-9a-f]{64}(  quantix-os_0.2.0.efi)$", "1" * 64 + r"\1", sums.read_text(), flags=re.M))
    p = qx_release(server, token, "publish", str(build), check=False)
    assert p.returncode == 2 and "SHA256SUMS: the sha256 of quantix-os_0.2.0.efi" in p.stderr
    # bypassing the client: the server checks again and signs nothing
    h = {"Authorization": f"Bearer {token}"}
    up = requests.post(server.url + "/v1/uploads", headers=h, timeout=5).json()["upload_id"]
    for f in build.iterdir():
        if f.name in ("SHA256SUMS",) or ".manifest." in f.name or f.suffix == ".efi" or f.name.endswith(".zst"):
            assert requests.put(f"{server.url}/v1/uploads/{up}/{f.name}", data=f.read_bytes(), headers=h,
                                timeout=5).ok
    r = requests.post(f"{server.url}/v1/uploads/{up}/publish", json={"channel": "dev"}, headers=h, timeout=5)
    assert r.status_code == 400 and "SHA256SUMS" in r.json()["error"]
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    assert verify_repo(server.url, root_v1, tmp_path) == {}


def test_upload_names_and_size_limit(tmp_path):
    s = start_server(tmp_path / "data", extra_args=["--max-upload", "1000"])
    try:
        h = {"Authorization": f"Bearer {s.token('publish')}"}
        up = requests.post(s.url + "/v1/uploads", headers=h, timeout=5).json()["upload_id"]
        for bad in ("..%2F..%2Fetc%2Fpasswd", "evil.sh", ".hidden", "quantix-os_..efi"):
            r = requests.put(f"{s.url}/v1/uploads/{up}/{bad}", data=b"x", headers=h, timeout=5)
            assert r.status_code in (400, 404), (bad, r.status_code)
        r = requests.put(f"{s.url}/v1/uploads/../{up}/SHA256SUMS", data=b"x", headers=h, timeout=5)
        assert r.status_code in (400, 401, 404)
        r = requests.put(f"{s.url}/v1/uploads/{up}/SHA256SUMS", data=b"x" * 2000, headers=h, timeout=5)
        assert r.status_code == 413
        # no Content-Length (chunked): the limit is enforced while streaming, and the partial file goes
        r = requests.put(f"{s.url}/v1/uploads/{up}/SHA256SUMS", data=iter([b"x" * 600] * 3), headers=h, timeout=5)
        assert r.status_code == 413 and "over the limit" in r.json()["error"]
        assert list((tmp_path / "data" / "staging" / up).iterdir()) == []
        r = requests.put(f"{s.url}/v1/uploads/{up}/SHA256SUMS", data=iter([b"x" * 600]), headers=h, timeout=5)
        assert r.status_code == 200 and r.json()["size"] == 600
        r = requests.put(f"{s.url}/v1/uploads/{'0' * 32}/SHA256SUMS", data=b"x", headers=h, timeout=5)
        assert r.status_code == 404
        assert not list((tmp_path / "data").rglob("passwd"))
    finally:
        s.stop()


def test_concurrent_publishes_are_serialized(server, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    builds = [make_release(f"0.{i}.0") for i in range(2, 5)]
    errors: list[BaseException] = []

    def pub(b: Path) -> None:
        try:
            qx_release(server, token, "publish", str(b))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=pub, args=(b,)) for b in builds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    assert len(verify_repo(server.url, root_v1, tmp_path)) == 6
    ts = requests.get(server.url + "/metadata/timestamp.json", timeout=5).json()
    assert ts["signed"]["version"] == 4  # init + three publishes, none lost


def test_checkin_feeds_fleet(server):
    host = {"Authorization": f"Bearer {server.token('checkin')}"}
    read = {"Authorization": f"Bearer {server.token('read')}"}
    body = {"host_id": "node-1", "version": "0.2.0", "slot": "a", "channel": "beta", "health": "good",
            "last_error": None}
    assert requests.post(server.url + "/v1/checkin", json=body, headers=host, timeout=5).status_code == 204
    body2 = body | {"version": "0.3.0", "slot": "b", "health": "bad", "last_error": "bootcheck failed"}
    assert requests.post(server.url + "/v1/checkin", json=body2, headers=host, timeout=5).status_code == 204
    hosts = requests.get(server.url + "/v1/fleet", headers=read, timeout=5).json()["hosts"]
    assert len(hosts) == 1 and hosts[0]["version"] == "0.3.0" and hosts[0]["last_error"] == "bootcheck failed"
    for field, bad in (("slot", "c"), ("channel", "nightly"), ("host_id", "../x"), ("health", "great")):
        r = requests.post(server.url + "/v1/checkin", json=body | {field: bad}, headers=host, timeout=5)
        assert r.status_code == 422 and field in r.text
    # a checkin token cannot read the fleet
    assert requests.get(server.url + "/v1/fleet", headers=host, timeout=5).status_code == 403


def test_metadata_fast_path(server, tmp_path, make_release):
    """/metadata/ is answered from a cache keyed by the file's identity: a new timestamp.json shows at once."""
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    md = server.data_dir / "repository" / "metadata"
    for _ in range(2):  # second round answered from the cache
        r = requests.get(server.url + "/metadata/timestamp.json", timeout=5)
        assert r.status_code == 200 and r.content == (md / "timestamp.json").read_bytes()
        assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-cache"
    qx_release(server, token, "publish", str(make_release("0.2.0")))
    r = requests.get(server.url + "/metadata/timestamp.json", timeout=5)
    assert r.json()["signed"]["version"] == 2 and r.content == (md / "timestamp.json").read_bytes()
    head = requests.head(server.url + "/metadata/1.root.json", timeout=5)
    assert head.status_code == 200 and int(head.headers["content-length"]) == (md / "1.root.json").stat().st_size
    for bad in ("/metadata/9.root.json", "/metadata/..%2Fusers.db", "/metadata/x.json",
                "/metadata/"):
        assert requests.get(server.url + bad, timeout=5).status_code == 404, bad


def test_remove_through_cli(server, tmp_path, make_release):
    """remove takes a release out of the signed set for good: hosts no longer see it, the version stays used."""
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    build = make_release("0.2.0")
    qx_release(server, token, "publish", str(build))
    p = qx_release(server, token, "remove", "0.2.0")
    assert "0.2.0: removed from the signed metadata" in p.stdout
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    assert verify_repo(server.url, root_v1, tmp_path) == {}
    again = qx_release(server, token, "publish", str(make_release("0.2.0")), check=False)
    assert again.returncode == 2 and "0.2.0 was published before and has been retired (removed)" in again.stderr
    assert "retired (no longer signed): 0.2.0 (removed)" in qx_release(server, token, "list").stdout
    twice = qx_release(server, token, "remove", "0.2.0", check=False)
    assert twice.returncode == 2 and "already removed" in twice.stderr
    yank_only = {"Authorization": f"Bearer {server.token('read')}"}
    assert requests.post(server.url + "/v1/releases/0.2.0/remove", headers=yank_only, timeout=5).status_code == 403
    audit = requests.get(server.url + "/v1/audit", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    assert [e for e in audit["entries"] if e["action"] == "remove"][0]["detail"] == {"version": "0.2.0"}


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qx_update_server.cli", *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


def test_token_list_revoke_and_audit_through_cli(server):
    create = subprocess.run([sys.executable, "-m", "qx_update_server.cli", "token", "create", "--data-dir",
                             str(server.data_dir), "--name", "ci", "--scopes", "read,yank", "--expires-days", "30"],
                            capture_output=True, text=True, timeout=60)
    assert create.returncode == 0, create.stderr
    secret = create.stdout.strip()
    token_id = re.search(r"token (tok_[0-9a-f]{12}) \(ci\) created, expires ", create.stderr).group(1)
    h = {"Authorization": f"Bearer {secret}"}
    assert requests.get(server.url + "/v1/releases", headers=h, timeout=5).ok
    listing = _cli(server, "token", "list", "--json")
    row = next(r for r in json.loads(listing.stdout) if r["id"] == token_id)
    assert row["scopes"] == ["read", "yank"] and row["last_used"] and row["expires"] and not row["revoked"]
    assert "active" in _cli(server, "token", "list").stdout
    dup = subprocess.run([sys.executable, "-m", "qx_update_server.cli", "token", "create", "--data-dir",
                          str(server.data_dir), "--name", "ci", "--scopes", "read"], capture_output=True, text=True)
    assert dup.returncode == 2 and "already exists" in dup.stderr and "hint:" in dup.stderr
    revoke = _cli(server, "token", "revoke", "ci")
    assert revoke.returncode == 0 and token_id in revoke.stdout
    assert requests.get(server.url + "/v1/releases", headers=h, timeout=5).status_code == 401  # at once
    again = _cli(server, "token", "revoke", token_id)
    assert again.returncode == 2 and "no such token" in again.stderr
    read = {"Authorization": f"Bearer {server.token('read')}"}
    entries = requests.get(server.url + "/v1/audit", headers=read, timeout=5).json()["entries"]
    assert [e["action"] for e in entries if e.get("token_id") == token_id] == ["token-revoke", "token-create"]
    helptext = subprocess.run([sys.executable, "-m", "qx_update_server.cli", "token", "create", "--help"],
                              capture_output=True, text=True).stdout
    assert "keys" in helptext and "rotate" in helptext  # the scopes are documented where tokens are made


def test_checkin_identity(server):
    shared = {"Authorization": f"Bearer {server.token('checkin')}"}
    read = {"Authorization": f"Bearer {server.token('read')}"}
    body = {"host_id": "node-1", "version": "0.2.0", "slot": "a", "channel": "dev", "health": "good"}
    key = {"X-Quantix-Host-Key": "k" * 43}
    assert requests.post(server.url + "/v1/checkin", json=body, headers=shared | key, timeout=5).status_code == 204
    # the same shared token cannot rewrite node-1 without node-1's key
    for other in ({}, {"X-Quantix-Host-Key": "x" * 43}):
        r = requests.post(server.url + "/v1/checkin", json=body | {"version": "6.6.6"}, headers=shared | other,
                          timeout=5)
        assert r.status_code == 403 and "node-1" in r.json()["error"]
    r = requests.post(server.url + "/v1/checkin", json=body, headers=shared | {"X-Quantix-Host-Key": "short"}, timeout=5)
    assert r.status_code == 400
    hosts = requests.get(server.url + "/v1/fleet", headers=read, timeout=5).json()["hosts"]
    assert [(h["host_id"], h["version"], h["identity"]) for h in hosts] == [("node-1", "0.2.0", "key")]
    # a token bound to one host at enrolment reports only that host
    bound = subprocess.run([sys.executable, "-m", "qx_update_server.cli", "token", "create", "--data-dir",
                            str(server.data_dir), "--name", "host-n2", "--scopes", "checkin", "--host", "node-2"],
                           capture_output=True, text=True, check=True).stdout.strip()
    hb = {"Authorization": f"Bearer {bound}"}
    assert requests.post(server.url + "/v1/checkin", json=body | {"host_id": "node-2"}, headers=hb,
                         timeout=5).status_code == 204
    r = requests.post(server.url + "/v1/checkin", json=body, headers=hb | key, timeout=5)
    assert r.status_code == 403 and "only host node-2" in r.json()["error"]
    entries = requests.get(server.url + "/v1/audit", headers=read, timeout=5).json()["entries"]
    assert [e["action"] for e in entries].count("checkin-refused") == 3
    # a reinstalled host: the operator unbinds its key, the new key binds at the next check-in
    assert _cli(server, "host", "forget", "node-1").returncode == 0
    assert requests.post(server.url + "/v1/checkin", json=body, headers=shared | {"X-Quantix-Host-Key": "n" * 43},
                         timeout=5).status_code == 204


def test_second_server_keeps_the_first_ones_uploads(tmp_path, make_release):
    """Two servers on one data directory: starting B keeps A's upload (B can even finish it); once A is
    gone, the next start deletes what A left."""
    data = tmp_path / "data"
    a = start_server(data)
    b = c = None
    try:
        token = a.token(*ALL)
        qx_release(a, token, "keys", "init")
        h = {"Authorization": f"Bearer {token}"}
        build = make_release("0.2.0")
        up = requests.post(a.url + "/v1/uploads", headers=h, timeout=5).json()["upload_id"]
        for f in build.iterdir():
            if f.name == "SHA256SUMS" or f.name.startswith("quantix-os_0.2.0.") and not f.name.endswith((".raw", ".iso")):
                requests.put(f"{a.url}/v1/uploads/{up}/{f.name}", data=f.read_bytes(), headers=h,
                             timeout=30).raise_for_status()
        left = requests.post(a.url + "/v1/uploads", headers=h, timeout=5).json()["upload_id"]
        b = start_server(data)
        assert (data / "staging" / up).is_dir() and (data / "staging" / left).is_dir()
        r = requests.post(f"{b.url}/v1/uploads/{up}/publish", json={"channel": "dev"}, headers=h, timeout=30)
        assert r.status_code == 200, r.text
        a.stop()
        c = start_server(data)
        assert not (data / "staging" / left).exists()  # A is gone: its abandoned upload went at C's start
        root_v1 = requests.get(c.url + "/metadata/1.root.json", timeout=5).content
        assert len(verify_repo(c.url, root_v1, tmp_path)) == 2
    finally:
        for s in (a, b, c):
            if s is not None:
                s.stop()
