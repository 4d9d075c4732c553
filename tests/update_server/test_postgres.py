"""The real service with ``--database postgresql://…`` against a real PostgreSQL server.

A release is published with ``qx-release``, a host checks in, the fleet shows it; the server is
restarted and everything (tokens, release records, audit log, fleet) is still there, because it lives
in PostgreSQL, not in the data dir. Then what an operator sees when the database is unreachable: at
start, a one-line error naming the URL (password hidden) with a hint; while running, 503 on the API
while hosts keep getting the signed metadata.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import ALL, ROOT, free_port, qx_release, start_server, verify_repo
from .pgcluster import PASSWORD


@pytest.mark.root
def test_server_on_postgres_publish_checkin_fleet_and_restart(pg_cluster: Any, pg_url: str, tmp_path: Path,
                                                             make_release: Any) -> None:
    data = tmp_path / "data"
    s = start_server(data, database=pg_url)
    try:
        token = s.token(*ALL, name="test")
        checkin = s.token("checkin")
        qx_release(s, token, "keys", "init")
        qx_release(s, token, "publish", "--channel", "beta", "--notes", "on postgres", str(make_release("0.2.0")))
        body = {"host_id": "node-1", "version": "0.2.0", "slot": "b", "channel": "beta", "health": "good",
                "last_error": None}
        r = requests.post(s.url + "/v1/checkin", json=body, headers={"Authorization": f"Bearer {checkin}"},
                          timeout=5)
        assert r.status_code == 204
        hosts = requests.get(s.url + "/v1/fleet", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        assert [(h["host_id"], h["version"], h["slot"]) for h in hosts["hosts"]] == [("node-1", "0.2.0", "b")]
    finally:
        s.stop()
    assert "database postgresql://qx:***@127.0.0.1" in s.log.read_text()
    assert PASSWORD not in s.log.read_text()
    # Nothing of the server's state went to SQLite; it is all in PostgreSQL.
    assert not (data / "server.db").exists()
    database = urlsplit(pg_url).path.lstrip("/")
    assert pg_cluster.sql("SELECT host_id, health FROM fleet", database=database) == [["node-1", "good"]]
    assert pg_cluster.sql("SELECT version, published_by FROM releases", database=database) == [["0.2.0", "test"]]
    stored = [r[0] for r in pg_cluster.sql("SELECT hash FROM tokens", database=database)]
    assert len(stored) == 2 and token not in stored and checkin not in stored

    s2 = start_server(data, database=pg_url)  # a new process: same data dir, same database
    try:
        read = {"Authorization": f"Bearer {token}"}  # the token from before the restart still works
        hosts = requests.get(s2.url + "/v1/fleet", headers=read, timeout=5).json()["hosts"]
        assert [h["host_id"] for h in hosts] == ["node-1"]
        listing = json.loads(qx_release(s2, token, "--json", "list").stdout)
        assert [(r["version"], r["published_by"]) for r in listing["releases"]] == [("0.2.0", "test")]
        audit = requests.get(s2.url + "/v1/audit", headers=read, timeout=5).json()["entries"]
        assert [e["action"] for e in audit][:2] == ["publish", "keys-init"]
        body2 = {"host_id": "node-1", "version": "0.2.0", "slot": "b", "channel": "beta", "health": "bad",
                 "last_error": "gate failed"}
        r = requests.post(s2.url + "/v1/checkin", json=body2, headers={"Authorization": f"Bearer {checkin}"},
                          timeout=5)
        assert r.status_code == 204
        hosts = requests.get(s2.url + "/v1/fleet", headers=read, timeout=5).json()["hosts"]
        assert len(hosts) == 1 and hosts[0]["health"] == "bad" and hosts[0]["last_error"] == "gate failed"
        root_v1 = requests.get(s2.url + "/metadata/1.root.json", timeout=5).content
        got = verify_repo(s2.url, root_v1, tmp_path)
        assert got["0.2.0/quantix-os_0.2.0.efi"]["notes"] == "on postgres"
    finally:
        s2.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qx_update_server.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    """No server listens on the port: exit 3, one line naming the URL without its password, and a hint."""
    port = free_port()
    url = f"postgresql://qx:hunter2@127.0.0.1:{port}/updates"
    for args in (["serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
                  "--database", url],
                 ["token", "create", "--data-dir", str(tmp_path / "d"), "--database", url, "--name", "ci",
                  "--scopes", "read"]):
        p = _cli(*args)
        assert p.returncode == 3, p.stderr
        lines = [line.split(": ", 1)[1] for line in p.stderr.strip().splitlines()]  # without the program name
        assert lines[0] == (f"error: --database postgresql://qx:***@127.0.0.1:{port}/updates: "
                            f"cannot reach the PostgreSQL server at 127.0.0.1:{port}: Connection refused"), p.stderr
        assert lines[1].startswith(f"hint: is PostgreSQL running and accepting connections at 127.0.0.1:{port}?")
        assert len(lines) == 2 and "hunter2" not in p.stderr and "Traceback" not in p.stderr
    # a malformed URL is the operator's input: exit 2
    p = _cli("token", "create", "--data-dir", str(tmp_path / "d"), "--name", "ci", "--scopes", "read",
             "--database", "postgresql://qx:hunter2@127.0.0.1/updates?sslmode=sometimes")
    assert p.returncode == 2 and "sslmode 'sometimes'" in p.stderr and "hunter2" not in p.stderr


@pytest.mark.root
def test_database_outage_is_503_on_the_api_and_hosts_still_get_metadata(tmp_path: Path,
                                                                       make_release: Any) -> None:
    """The design goal: the signed repository is static files; a dead database only stops the API."""
    from .pgcluster import PgCluster

    cluster = PgCluster.start()  # its own server: this test stops it
    s = None
    try:
        url = cluster.url(cluster.create_database())
        s = start_server(tmp_path / "data", database=url)
        token = s.token(*ALL)
        qx_release(s, token, "keys", "init")
        qx_release(s, token, "publish", str(make_release("0.2.0")))
        cluster.stop()
        r = requests.get(s.url + "/v1/fleet", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 503, r.text
        err = r.json()
        assert "postgresql://qx:***@127.0.0.1" in err["error"] and PASSWORD not in r.text
        assert err["hint"]
        root_v1 = requests.get(s.url + "/metadata/1.root.json", timeout=5)
        assert root_v1.ok
        assert len(verify_repo(s.url, root_v1.content, tmp_path)) == 2
    finally:
        if s is not None:
            s.stop()
        cluster.stop()


@pytest.mark.root
def test_two_servers_on_one_database_and_data_dir(pg_cluster: Any, pg_url: str, tmp_path: Path,
                                                  make_release: Any) -> None:
    """The multi-server deployment: two processes share the PostgreSQL database and the data directory.
    A token made once works on both, a publish through one is served by the other, check-ins sent to
    both at once all land, a revoke takes effect on both, and concurrent publishes stay serialized."""
    import threading

    data = tmp_path / "data"
    a = start_server(data, database=pg_url)
    b = start_server(data, database=pg_url)
    try:
        token = a.token(*ALL)
        h = {"Authorization": f"Bearer {token}"}
        qx_release(b, token, "keys", "init")
        errors: list[BaseException] = []

        def pub(server: Any, version: str) -> None:
            try:
                qx_release(server, token, "publish", str(make_release(version)))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=pub, args=(srv, v)) for srv, v in ((a, "0.2.0"), (b, "0.3.0"))]
        checkin = {"Authorization": f"Bearer {b.token('checkin')}"}

        def hosts(server: Any, first: int) -> None:
            try:
                for i in range(first, first + 40):
                    body = {"host_id": f"n{i:03d}", "version": "0.1.0", "slot": "a", "channel": "dev",
                            "health": "good"}
                    r = requests.post(server.url + "/v1/checkin", json=body, headers=checkin, timeout=10)
                    assert r.status_code == 204, r.text
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads += [threading.Thread(target=hosts, args=(a, 0)), threading.Thread(target=hosts, args=(b, 40))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        root_v1 = requests.get(a.url + "/metadata/1.root.json", timeout=5).content
        for srv in (a, b):
            assert len(verify_repo(srv.url, root_v1, tmp_path)) == 4
            fleet = requests.get(srv.url + "/v1/fleet", headers=h, timeout=10).json()
            assert fleet["summary"]["total"] == 80
        ts = requests.get(a.url + "/metadata/timestamp.json", timeout=5).json()
        assert ts["signed"]["version"] == 3  # init + two publishes, none lost
        cli = [sys.executable, "-m", "qx_update_server.cli", "token"]
        where = ["--data-dir", str(data), "--database", pg_url]
        listing = subprocess.run([*cli, "list", "--json", *where], capture_output=True, text=True, check=True, cwd=ROOT)
        token_id = next(r["id"] for r in json.loads(listing.stdout) if "publish" in r["scopes"])
        revoke = subprocess.run([*cli, "revoke", *where, token_id], capture_output=True, text=True, cwd=ROOT)
        assert revoke.returncode == 0, revoke.stderr
        for srv in (a, b):
            assert requests.get(srv.url + "/v1/releases", headers=h, timeout=5).status_code == 401
    finally:
        a.stop()
        b.stop()
