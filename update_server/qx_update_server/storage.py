"""Server state that is not the signed repository: API tokens, release records, audit log, fleet.

:class:`Storage` is the interface the app uses; :class:`SQLiteStorage` is the embedded backend (one
file, ``<data-dir>/server.db``, WAL mode). A PostgreSQL backend for deployments that outgrow one
machine belongs behind the same interface; it is **not implemented yet** and :func:`open_storage`
says so plainly for a ``postgresql://`` URL rather than pretending.

The signed repository stays the truth about releases (what hosts see); the ``releases`` table only
adds who published what, when, and the build manifest. Tokens are stored as SHA-256 hashes — the
secret is shown once, at creation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qx_common.errors import EnvironmentError_, UserError

SCOPES = ("publish", "promote", "yank", "rollout", "keys", "read", "checkin")
HEALTH = ("good", "degraded", "bad", "unknown")


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]


class Storage(Protocol):
    def create_token(self, name: str, scopes: list[str]) -> str: ...
    def lookup_token(self, secret: str) -> Token | None: ...
    def record_release(self, version: str, by: str, manifest: dict[str, Any]) -> None: ...
    def release_records(self) -> dict[str, dict[str, Any]]: ...
    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def checkin(self, report: dict[str, Any]) -> None: ...
    def fleet(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL,
                                   created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (version TEXT PRIMARY KEY, published_by TEXT NOT NULL,
                                     published_at TEXT NOT NULL, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
                                  action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fleet (host_id TEXT PRIMARY KEY, version TEXT NOT NULL, slot TEXT NOT NULL,
                                  channel TEXT NOT NULL, health TEXT NOT NULL, last_error TEXT,
                                  last_seen TEXT NOT NULL);
"""


class SQLiteStorage:
    """One connection shared under a lock: SQLite serializes writers anyway, and this keeps it simple."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise EnvironmentError_(f"cannot open the server database {path}: {e}") from e
        self._lock = threading.Lock()

    def _x(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create_token(self, name: str, scopes: list[str]) -> str:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise UserError(f"scopes: unknown or empty ({', '.join(bad) or 'none given'})",
                            hint=f"choose from: {', '.join(SCOPES)}")
        secret = "qxr_" + secrets.token_urlsafe(32)
        self._x("INSERT INTO tokens VALUES (?, ?, ?, ?)", (_hash(secret), name, ",".join(sorted(scopes)), _now()))
        return secret

    def lookup_token(self, secret: str) -> Token | None:
        rows = self._x("SELECT name, scopes FROM tokens WHERE hash = ?", (_hash(secret),))
        return Token(rows[0][0], frozenset(rows[0][1].split(","))) if rows else None

    def record_release(self, version: str, by: str, manifest: dict[str, Any]) -> None:
        self._x("INSERT OR REPLACE INTO releases VALUES (?, ?, ?, ?)", (version, by, _now(), json.dumps(manifest)))

    def release_records(self) -> dict[str, dict[str, Any]]:
        return {v: {"published_by": b, "published_at": at, "manifest": json.loads(m)}
                for v, b, at, m in self._x("SELECT version, published_by, published_at, manifest FROM releases")}

    def audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        self._x("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (_now(), actor, action, json.dumps(detail, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._x("SELECT at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": a, "actor": b, "action": c, "detail": json.loads(d)} for a, b, c, d in rows]

    def checkin(self, report: dict[str, Any]) -> None:
        self._x("INSERT INTO fleet VALUES (:host_id, :version, :slot, :channel, :health, :last_error, :seen) "
                "ON CONFLICT(host_id) DO UPDATE SET version=excluded.version, slot=excluded.slot, "
                "channel=excluded.channel, health=excluded.health, last_error=excluded.last_error, "
                "last_seen=excluded.last_seen", {**report, "seen": _now()})  # type: ignore[arg-type]

    def fleet(self) -> list[dict[str, Any]]:
        rows = self._x("SELECT host_id, version, slot, channel, health, last_error, last_seen FROM fleet "
                       "ORDER BY host_id")
        keys = ("host_id", "version", "slot", "channel", "health", "last_error", "last_seen")
        return [dict(zip(keys, r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_storage(data_dir: Path, url: str | None = None) -> Storage:
    """``None`` or ``sqlite:///path`` → SQLite; ``postgresql://…`` is the planned second backend."""
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(data_dir / "server.db")
    if url.startswith("sqlite:///"):
        return SQLiteStorage(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        raise EnvironmentError_(
            "--database: PostgreSQL storage is not implemented in this version",
            hint="use the embedded SQLite (leave --database unset); a PostgreSQL backend implements "
                 "qx_update_server.storage.Storage")
    raise UserError(f"--database: unsupported URL {url!r}", hint="use sqlite:///PATH")
