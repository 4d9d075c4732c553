"""The storage interface, the same tests for both backends: SQLite (default) and a real PostgreSQL server.

The PostgreSQL half runs against a throwaway server started by the ``pg_cluster`` fixture (root only);
each test gets a fresh database. Then PostgreSQL-only behaviour: reconnecting after the server dropped
the connections, concurrent first starts, and the errors an operator sees for a wrong URL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from qx_common.errors import EnvironmentError_, UserError
from qx_update_server.storage import (
    PostgresStorage,
    SQLiteStorage,
    Storage,
    open_storage,
    parse_postgres_url,
    redact_url,
)

from .conftest import free_port
from .pgcluster import PASSWORD


@dataclass
class Backend:
    name: str
    open: Callable[[], Storage]
    raw: Callable[[str], list[Any]]  # run SQL straight on the database, bypassing the Storage


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.root)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[Storage] = []

    def track(make: Callable[[], Storage]) -> Callable[[], Storage]:
        def _open() -> Storage:
            s = make()
            opened.append(s)
            return s
        return _open

    if request.param == "sqlite":
        import sqlite3

        def raw(sql: str) -> list[Any]:
            with sqlite3.connect(tmp_path / "data" / "server.db") as db:
                return [list(r) for r in db.execute(sql).fetchall()]
        yield Backend("sqlite", track(lambda: open_storage(tmp_path / "data")), raw)
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = request.getfixturevalue("pg_url")
        database = urlsplit(url).path.lstrip("/")
        yield Backend("postgres", track(lambda: open_storage(tmp_path / "data", url)),
                      lambda sql: cluster.sql(sql, database=database))
    for s in opened:
        s.close()


def report(host: str, **kw: Any) -> dict[str, Any]:
    return {"host_id": host, "version": "1.0.0", "slot": "a", "channel": "stable", "health": "good",
            "last_error": None} | kw


def test_backend_class(backend: Backend) -> None:
    s = backend.open()
    assert isinstance(s, SQLiteStorage if backend.name == "sqlite" else PostgresStorage)


def test_tokens_are_stored_hashed(backend: Backend) -> None:
    s = backend.open()
    secret = s.create_token("ci", ["read", "publish"])
    assert secret.startswith("qxr_") and len(secret) > 40
    tok = s.lookup_token(secret)
    assert tok is not None and (tok.name, tok.scopes) == ("ci", frozenset({"publish", "read"}))
    assert tok.id.startswith("tok_") and len(tok.id) == 16
    assert s.lookup_token(secret + "x") is None and s.lookup_token("") is None
    rows = backend.raw("SELECT hash, name, scopes, created FROM tokens")
    assert len(rows) == 1 and rows[0][0] == hashlib.sha256(secret.encode()).hexdigest()
    assert rows[0][1:3] == ["ci", "publish,read"]
    assert not any(secret in str(col) for col in rows[0])
    for bad in ([], ["read", "root"]):
        with pytest.raises(UserError, match="scopes"):
            s.create_token("x", bad)
    assert len(backend.raw("SELECT hash FROM tokens")) == 1


def test_release_records_and_audit_log(backend: Backend) -> None:
    s = backend.open()
    s.record_release("0.2.0", "ci", {"version": "0.2.0", "artifacts": {"root": {"size": 1}}})
    s.record_release("0.3.0", "ci", {"version": "0.3.0"})
    s.record_release("0.2.0", "alice", {"version": "0.2.0", "notes": "é ✓"})  # a re-publish replaces
    recs = s.release_records()
    assert set(recs) == {"0.2.0", "0.3.0"}
    assert recs["0.2.0"]["published_by"] == "alice" and recs["0.2.0"]["manifest"]["notes"] == "é ✓"
    assert recs["0.3.0"]["published_at"].endswith("Z")

    for i in range(5):
        s.audit("ci", "publish", {"version": f"0.{i}.0", "n": i})
    s.audit("server", "resign", {"roles": ["timestamp"]})
    log = s.audit_log(3)
    assert [e["action"] for e in log] == ["resign", "publish", "publish"]
    assert log[0] == {"at": log[0]["at"], "actor": "server", "action": "resign", "detail": {"roles": ["timestamp"]}}
    assert log[1]["detail"] == {"version": "0.4.0", "n": 4}
    assert len(s.audit_log()) == 6


def test_checkin_is_an_upsert_and_the_fleet_is_sorted(backend: Backend) -> None:
    s = backend.open()
    s.checkin(report("b-host"))
    s.checkin(report("a-host", health="unknown"))
    s.checkin(report("B-host"))
    s.checkin(report("a-host", version="1.1.0", slot="b", health="bad", last_error="bootcheck failed"))
    fleet = s.fleet()
    assert [h["host_id"] for h in fleet] == ["B-host", "a-host", "b-host"]  # byte order in both backends
    a = fleet[1]
    assert (a["version"], a["slot"], a["health"], a["last_error"]) == ("1.1.0", "b", "bad", "bootcheck failed")
    assert fleet[0]["last_error"] is None and fleet[0]["last_seen"].endswith("Z")
    s.checkin(report("a-host"))
    assert s.fleet()[1]["last_error"] is None


def test_concurrent_checkins_and_lookups(backend: Backend) -> None:
    """Many hosts reporting at once (the web server calls storage from a thread pool)."""
    s = backend.open()
    secret = s.create_token("hosts", ["checkin"])
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                s.checkin(report(f"host-{i % 10}", version=f"1.{n}.{i}"))
                assert s.lookup_token(secret) is not None
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    fleet = s.fleet()
    assert [h["host_id"] for h in fleet] == [f"host-{i}" for i in range(10)]
    for h in fleet:  # the last write won, whichever thread it came from
        n, i = map(int, h["version"].split(".")[1:])
        assert int(h["host_id"].split("-")[1]) == i % 10 and 0 <= n < 8
    assert len(backend.raw("SELECT host_id FROM fleet")) == 10


def test_data_survives_reopening_and_concurrent_first_opens(backend: Backend) -> None:
    openers: list[Storage] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            openers.append(backend.open())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    # Several servers starting at once against an empty database: the tables are created once.
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    s = openers[0]
    secret = s.create_token("ci", ["read"])
    s.checkin(report("node-1"))
    s.record_release("0.2.0", "ci", {})
    s.audit("ci", "publish", {"version": "0.2.0"})
    for o in openers:
        o.close()
    again = backend.open()
    tok = again.lookup_token(secret)
    assert tok is not None and (tok.name, tok.scopes) == ("ci", frozenset({"read"}))
    assert [h["host_id"] for h in again.fleet()] == ["node-1"]
    assert list(again.release_records()) == ["0.2.0"] and again.audit_log()[0]["action"] == "publish"


# ---- PostgreSQL only -------------------------------------------------------------------------------


@pytest.mark.root
def test_postgres_reconnects_after_the_server_dropped_the_connections(pg_cluster: Any, pg_url: str) -> None:
    s = PostgresStorage(pg_url, pool_size=4)
    try:
        barrier = threading.Barrier(4)

        def busy() -> None:  # fill the pool with idle connections
            barrier.wait()
            s.checkin(report(f"h-{threading.get_ident()}"))
        threads = [threading.Thread(target=busy) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        killed = pg_cluster.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE usename = 'qx' AND pid <> pg_backend_pid()")
        assert killed[0][0] >= 2
        assert len(s.fleet()) == 4  # one retry on a fresh connection, the dead idle ones discarded
        s.checkin(report("after"))
        assert len(s.fleet()) == 5
    finally:
        s.close()


@pytest.mark.root
def test_postgres_connection_errors_name_the_url_and_hide_the_password(pg_cluster: Any, pg_url: str,
                                                                       tmp_path: Path) -> None:
    name = urlsplit(pg_url).path.lstrip("/")

    def error(url: str) -> tuple[type, str, str]:
        with pytest.raises((UserError, EnvironmentError_)) as e:
            open_storage(tmp_path, url)
        assert PASSWORD not in e.value.message and PASSWORD not in (e.value.hint or "")
        return type(e.value), e.value.message, e.value.hint or ""

    kind, msg, hint = error(pg_cluster.url(name, password="wrong password"))
    assert kind is UserError and "password authentication failed" in msg and "postgresql://qx:***@" in msg
    assert "PGPASSWORD" in hint
    kind, msg, hint = error(pg_cluster.url("no_such_db"))
    assert kind is EnvironmentError_ and '"no_such_db" does not exist' in msg
    assert "createdb --owner=qx no_such_db" in hint
    port = free_port()
    kind, msg, hint = error(pg_cluster.url(name, port=port))
    assert kind is EnvironmentError_
    assert msg == (f"--database postgresql://qx:***@127.0.0.1:{port}/{name}: cannot reach the PostgreSQL "
                   f"server at 127.0.0.1:{port}: Connection refused")
    assert f"accepting connections at 127.0.0.1:{port}" in hint
    # a user who may not create tables (PostgreSQL 15: nobody may create in public by default)
    other = pg_cluster.create_database(owner="postgres")
    pg_cluster.sql(f"GRANT CONNECT ON DATABASE {other} TO qx")
    kind, msg, hint = error(pg_cluster.url(other))
    assert kind is EnvironmentError_ and "cannot create the tables: permission denied" in msg
    assert "GRANT CREATE ON SCHEMA public TO qx" in hint
    pg_cluster.drop_database(other)


@pytest.mark.root
def test_postgres_password_from_the_environment_and_unix_socket(pg_cluster: Any, pg_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    name = urlsplit(pg_url).path.lstrip("/")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    s = PostgresStorage(pg_cluster.url(name, password=None))
    s.checkin(report("env"))
    s.close()
    # a socket directory as the host: local connections are trusted in the test cluster
    s = PostgresStorage(f"postgresql://qx@/{name}?host={pg_cluster.socket_dir}&port={pg_cluster.port}")
    assert [h["host_id"] for h in s.fleet()] == ["env"]
    s.close()


def test_postgres_url_parsing_and_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGUSER", "envuser")
    t = parse_postgres_url("postgresql://qx:p%40ss%3Aw%2Frd@db.example:5433/fleet?sslmode=require")
    assert (t.user, t.password, t.host, t.port, t.database) == ("qx", "p@ss:w/rd", "db.example", 5433, "fleet")
    assert t.sslmode == "require" and t.url == "postgresql://qx:***@db.example:5433/fleet?sslmode=require"
    assert "p@ss" not in repr(t)
    t = parse_postgres_url("postgres://[::1]/")
    assert (t.user, t.database, t.host, t.port, t.unix_sock) == ("envuser", "envuser", "::1", 5432, None)
    t = parse_postgres_url("postgresql://%2Frun%2FPG/db")
    assert t.unix_sock == "/run/PG/.s.PGSQL.5432" and t.ssl_context() is False
    assert parse_postgres_url("postgresql:///db").unix_sock == "/var/run/postgresql/.s.PGSQL.5432"
    assert redact_url("postgresql://u:secret@h/d?password=secret2") == "postgresql://u:***@h/d?password=***"
    for bad, why in (("postgresql://u:secret@h:99999/d", "not a valid URL"),
                     ("postgresql://u:secret@h/d?sslmode=maybe", "sslmode 'maybe'"),
                     ("postgresql://u:secret@h/d?password=secret", "unsupported option 'password'"),
                     ("postgresql://u:secret@h/d?connect_timeout=-1", "connect_timeout")):
        with pytest.raises(UserError, match=why) as e:
            parse_postgres_url(bad)
        assert "secret" not in e.value.message and "postgresql://USER:PASSWORD@HOST" in (e.value.hint or "")
    with pytest.raises(UserError, match="unsupported URL 'mysql://u:\\*\\*\\*@h/d'"):
        open_storage(Path("/nonexistent"), "mysql://u:secret@h/d")


def test_token_lifecycle(backend: Backend) -> None:
    """Unique names, list, revoke (by id or name), expiry, last-used time; revoked/expired tokens fail."""
    s = backend.open()
    a = s.create_token("ci", ["publish", "read"])
    with pytest.raises(UserError, match="a token named 'ci' already exists"):
        s.create_token("ci", ["read"])
    for bad in ("", "tok_x", "a b", "x" * 65, "../x"):
        with pytest.raises(UserError, match="--name"):
            s.create_token(bad, ["read"])
    with pytest.raises(UserError, match="only a check-in token"):
        s.create_token("h", ["read"], host_id="node-1")
    short = s.create_token("short", ["read"], expires_days=0.00001)  # about a second
    b = s.create_token("hosts", ["checkin"], expires_days=30)
    rows = {r["name"]: r for r in s.list_tokens()}
    assert set(rows) == {"ci", "short", "hosts"} and rows["ci"]["expires"] is None
    assert rows["hosts"]["expires"] > rows["hosts"]["created"] and rows["ci"]["last_used"] is None
    assert s.lookup_token(a) is not None
    assert {r["name"]: r for r in s.list_tokens()}["ci"]["last_used"] is not None
    deadline = time.monotonic() + 10
    while s.lookup_token(short) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s.lookup_token(short) is None  # expired
    revoked = s.revoke_token(rows["ci"]["id"])
    assert revoked["name"] == "ci" and revoked["revoked"]
    assert s.lookup_token(a) is None
    with pytest.raises(UserError, match="no such token"):
        s.revoke_token("ci")
    s.create_token("ci", ["read"])  # the name is free again once revoked
    assert s.revoke_token("hosts")["id"] == rows["hosts"]["id"] and s.lookup_token(b) is None
    s.audit("ci", "publish", {}, rows["ci"]["id"])
    assert s.audit_log(1)[0]["token_id"] == rows["ci"]["id"]


def test_host_key_binding(backend: Backend) -> None:
    from qx_update_server.storage import HostIdentityError

    s = backend.open()
    assert s.checkin(report("legacy")) == "none"
    assert s.checkin(report("node-1"), host_key="k" * 40, token_id="tok_a") == "key"
    assert s.checkin(report("node-1", version="0.3.0"), host_key="k" * 40) == "key"
    with pytest.raises(HostIdentityError, match="another host key"):
        s.checkin(report("node-1", version="6.6.6"), host_key="x" * 40)
    with pytest.raises(HostIdentityError, match="carried none"):
        s.checkin(report("node-1", version="6.6.6"))
    fleet = {h["host_id"]: h for h in s.fleet()}
    assert fleet["node-1"]["version"] == "0.3.0" and fleet["node-1"]["identity"] == "key"
    assert fleet["legacy"]["identity"] == "none"
    assert s.forget_host("node-1") and not s.forget_host("node-1")
    assert s.checkin(report("node-1"), host_key="n" * 40) == "key"  # a reinstalled host binds its new key


def test_old_database_is_migrated(tmp_path: Path) -> None:
    """A server.db from before token ids: columns added, ids filled, duplicate names renamed, still valid."""
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "server.db")
    db.executescript("""
        CREATE TABLE tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, created TEXT NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
                            action TEXT NOT NULL, detail TEXT NOT NULL);
    """)
    secrets_ = ["qxr_old1", "qxr_old2"]
    for i, sec in enumerate(secrets_):
        db.execute("INSERT INTO tokens VALUES (?, 'test', 'read', ?)",
                   (hashlib.sha256(sec.encode()).hexdigest(), f"2026-01-0{i + 1}T00:00:00Z"))
    db.commit()
    db.close()
    s = open_storage(data)
    names = sorted(r["name"] for r in s.list_tokens())
    assert names[0] == "test" and names[1].startswith("test-tok_")
    assert all(s.lookup_token(sec) is not None for sec in secrets_)
    s.close()
