"""Server state that is not the signed repository: API tokens, release records, audit log, fleet.

:class:`Storage` is the interface the app uses. Two backends implement it, chosen by
``qx-update-server serve --database URL`` (and ``token create --database URL``):

* :class:`SQLiteStorage` — the embedded default (``--database`` unset, or ``sqlite:///PATH``): one
  file, ``<data-dir>/server.db``, WAL mode. Nothing to run beside the server.
* :class:`PostgresStorage` — ``--database postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` for a
  deployment that outgrows one file: a shared, backed-up database several server processes can use.
  The driver is pg8000 (pure Python; the ``postgres`` extra of the project). The tables are created
  when missing (``CREATE TABLE IF NOT EXISTS`` under an advisory lock, so servers starting together do
  not race); a small pool of connections serves concurrent requests and replaces connections the
  database closed (a PostgreSQL restart). See :func:`parse_postgres_url` for the URL's options.

The signed repository stays the truth about releases (what hosts see); the ``releases`` table only
adds who published what, when, and the build manifest. Tokens are stored as SHA-256 hashes in both
backends — the secret is shown once, at creation. A check-in is an upsert (one row per host), safe
when many hosts report at once.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import re
import secrets
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from qx_common.errors import EnvironmentError_, ExternalError, UserError

SCOPES = ("publish", "promote", "yank", "rollout", "keys", "read", "checkin", "tokens")
# What each scope allows (docs/update-format.md section 2.2; `qx-update-server token --help`).
SCOPE_HELP = {
    "publish": "upload release files and publish them (signs a new release onto the dev/beta/stable channel given)",
    "promote": "add a published release to a higher channel",
    "yank": "yank a release (hosts are no longer offered it) and remove it from the signed metadata",
    "rollout": "change a release's rollout percentage, pause and resume it",
    "keys": "create the repository's signing keys and rotate them (root and online keys): the most powerful scope",
    "read": "list releases, the fleet, the audit log and key status",
    "checkin": "report a host's version and health (what hosts use; give each host its own with --host)",
    "tokens": "list, create and revoke API tokens over HTTP (the admin page); a token creates tokens only "
              "with scopes it holds itself",
}
TOKEN_ID_LEN = 12  # hex digits of a token id ("tok_" + these): printed, listed, named in the audit log
LAST_USED_EVERY = 60.0  # s: a token's last_used is written at most this often (not one write per request)
HEALTH = ("good", "degraded", "bad", "unknown")
_FLEET_COLUMNS = ("host_id", "version", "slot", "channel", "health", "last_error", "last_seen")
TOKEN_NAME = re.compile(r"(?!tok_)[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # "tok_…" is how ids look
MIN_HOST_KEY = 32  # characters of a host's own check-in key (X-Quantix-Host-Key)
FLEET_PAGE = 500  # hosts per page of the fleet list (at most FLEET_PAGE_MAX): a page is one indexed range scan
FLEET_PAGE_MAX = 2000


def _summary(total: int, by_health: list[Any], by_version: list[Any]) -> dict[str, Any]:
    return {"total": int(total), "health": {h: int(n) for h, n in by_health},
            "versions": {v: int(n) for v, n in by_version}}


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    id: str = ""
    host_id: str | None = None  # a check-in token bound to one host: it may report only that host


class HostIdentityError(UserError):
    """A check-in for a host whose bound identity does not match (see :meth:`Storage.checkin`); the
    fleet route answers it as 403."""


class Storage(Protocol):
    def create_token(self, name: str, scopes: list[str], *, expires_days: float | None = None,
                     host_id: str | None = None) -> str: ...
    def lookup_token(self, secret: str) -> Token | None: ...
    def list_tokens(self) -> list[dict[str, Any]]: ...
    def revoke_token(self, which: str) -> dict[str, Any]: ...
    def record_release(self, version: str, by: str, manifest: dict[str, Any]) -> None: ...
    def release_records(self) -> dict[str, dict[str, Any]]: ...
    def audit(self, actor: str, action: str, detail: dict[str, Any], token_id: str | None = None) -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def checkin(self, report: dict[str, Any], *, host_key: str | None = None, token_id: str = "") -> str: ...
    def fleet(self, limit: int = FLEET_PAGE, after: str | None = None) -> list[dict[str, Any]]: ...
    def fleet_summary(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_token(name: str, scopes: list[str], expires_days: float | None,
               host_id: str | None) -> tuple[str, str, str, str | None]:
    """Validate the request; return (secret, token id, stored scopes, expiry time or None)."""
    if not TOKEN_NAME.fullmatch(name or ""):
        raise UserError(f"--name: {name!r} is not a token name",
                        hint="1-64 letters, digits, '.', '_', '-', not starting with tok_ (e.g. ci-publish)")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise UserError(f"scopes: unknown or empty ({', '.join(bad) or 'none given'})",
                        hint=f"choose from: {', '.join(SCOPES)}")
    if host_id is not None and set(scopes) != {"checkin"}:
        raise UserError("--host: only a check-in token can be bound to a host", hint="use --scopes checkin")
    expires = None
    if expires_days is not None:
        if not 0 < expires_days <= 3650:
            raise UserError(f"--expires-days: {expires_days:g} must be more than 0 and at most 3650")
        expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=expires_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ("qxr_" + secrets.token_urlsafe(32), "tok_" + secrets.token_hex(TOKEN_ID_LEN // 2),
            ",".join(sorted(set(scopes))), expires)


def _duplicate_name(name: str) -> UserError:
    return UserError(f"--name: a token named {name!r} already exists",
                     hint="token names are unique: choose another name, or revoke the old token first "
                          "(qx-update-server token revoke NAME)")


def _token_row(r: Any) -> dict[str, Any]:
    return dict(zip(("id", "name", "scopes", "created", "expires", "last_used", "revoked", "host_id"), r)) | {
        "scopes": r[2].split(",")}


class _LastUsed:
    """Throttles last_used writes to one per token per LAST_USED_EVERY seconds (per process)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, token_hash: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._seen.get(token_hash, -LAST_USED_EVERY) < LAST_USED_EVERY:
                return False
            if len(self._seen) > 100_000:
                self._seen.clear()
            self._seen[token_hash] = now
            return True


def _check_host_key(host_id: str, bound: str | None, given: str | None) -> None:
    if bound is None:
        return
    if given is None:
        raise HostIdentityError(f"host {host_id} is bound to a host key and this check-in carried none")
    if not secrets.compare_digest(bound, _hash(given)):
        raise HostIdentityError(f"host {host_id} is bound to another host key")


# ---- SQLite ---------------------------------------------------------------------------------------

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
CREATE TABLE IF NOT EXISTS host_keys (host_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, bound_at TEXT NOT NULL,
                                      token_id TEXT NOT NULL);
"""
# Columns added after the first release of the schema (added to older databases when they are opened).
_TOKEN_COLUMNS_ADDED = ("id", "expires", "last_used", "revoked", "host_id")
# Token names are unique among tokens not revoked. Databases from before had no such rule: all but the
# newest token of a name get "-<id>" appended when the index is created.
_RENAME_DUPLICATES = ("UPDATE tokens SET name = name || '-' || id WHERE revoked IS NULL AND created || hash NOT IN "
                      "(SELECT max(created || hash) FROM tokens WHERE revoked IS NULL GROUP BY name)")
_NAME_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_name ON tokens (name) WHERE revoked IS NULL"
_FILL_IDS = "UPDATE tokens SET id = 'tok_' || substr(hash, 1, 12) WHERE id IS NULL"
_FLEET_SELECT = (", ".join(f"f.{c}" for c in _FLEET_COLUMNS)
                 + ", CASE WHEN k.host_id IS NULL THEN 'none' ELSE 'key' END FROM fleet f "
                   "LEFT JOIN host_keys k ON k.host_id = f.host_id")


class SQLiteStorage:
    """One connection shared under a lock: SQLite serializes writers anyway, and this keeps it simple."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            # Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is
            # locked" at once (no busy wait) when another process opening it at the same moment holds
            # a shared one: retry, bounded. The statements are idempotent.
            deadline = time.monotonic() + 30
            while True:
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
                    self._db.executescript(_SCHEMA)
                    self._migrate()
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except sqlite3.Error as e:
            raise EnvironmentError_(f"cannot open the server database {path}: {e}") from e
        self._lock = threading.Lock()
        self._last_used = _LastUsed()

    def _migrate(self) -> None:
        """Bring an older database to this schema; one process at a time (BEGIN IMMEDIATE)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(tokens)")}
            for c in _TOKEN_COLUMNS_ADDED:
                if c not in cols:
                    self._db.execute(f"ALTER TABLE tokens ADD COLUMN {c} TEXT")
            if "token_id" not in {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}:
                self._db.execute("ALTER TABLE audit ADD COLUMN token_id TEXT")
            self._db.execute(_FILL_IDS)
            self._db.execute(_RENAME_DUPLICATES)
            self._db.execute(_NAME_INDEX)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _x(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create_token(self, name: str, scopes: list[str], *, expires_days: float | None = None,
                     host_id: str | None = None) -> str:
        secret, tid, stored, expires = _new_token(name, scopes, expires_days, host_id)
        try:
            self._x("INSERT INTO tokens (hash, name, scopes, created, id, expires, host_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (_hash(secret), name, stored, _now(), tid, expires, host_id))
        except sqlite3.IntegrityError as e:
            raise _duplicate_name(name) from e
        return secret

    def lookup_token(self, secret: str) -> Token | None:
        """The token with this secret, unless revoked or expired; notes when it was last used."""
        h = _hash(secret)
        rows = self._x("SELECT name, scopes, id, expires, revoked, host_id FROM tokens WHERE hash = ?", (h,))
        if not rows:
            return None
        name, scopes, tid, expires, revoked, host_id = rows[0]
        now = _now()
        if revoked or (expires and expires <= now):
            return None
        if self._last_used.due(h):
            self._x("UPDATE tokens SET last_used = ? WHERE hash = ?", (now, h))
        return Token(name, frozenset(scopes.split(",")), tid, host_id)

    def list_tokens(self) -> list[dict[str, Any]]:
        return [_token_row(r) for r in self._x(
            "SELECT id, name, scopes, created, expires, last_used, revoked, host_id FROM tokens ORDER BY created, id")]

    def revoke_token(self, which: str) -> dict[str, Any]:
        with self._lock:
            cur = self._db.execute("UPDATE tokens SET revoked = ? WHERE (id = ? OR name = ?) AND revoked IS NULL",
                                   (_now(), which, which))
            if cur.rowcount == 0:
                raise UserError(f"token {which!r}: no such token that is not revoked already",
                                hint="see qx-update-server token list (give the id or the name)")
            row = self._db.execute("SELECT id, name, scopes, created, expires, last_used, revoked, host_id FROM tokens "
                                   "WHERE (id = ? OR name = ?) ORDER BY revoked DESC LIMIT 1", (which, which)).fetchone()
        return _token_row(row)

    def record_release(self, version: str, by: str, manifest: dict[str, Any]) -> None:
        self._x("INSERT OR REPLACE INTO releases VALUES (?, ?, ?, ?)", (version, by, _now(), json.dumps(manifest)))

    def release_records(self) -> dict[str, dict[str, Any]]:
        return {v: {"published_by": b, "published_at": at, "manifest": json.loads(m)}
                for v, b, at, m in self._x("SELECT version, published_by, published_at, manifest FROM releases")}

    def audit(self, actor: str, action: str, detail: dict[str, Any], token_id: str | None = None) -> None:
        self._x("INSERT INTO audit (at, actor, action, detail, token_id) VALUES (?, ?, ?, ?, ?)",
                (_now(), actor, action, json.dumps(detail, sort_keys=True), token_id))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._x("SELECT at, actor, action, detail, token_id FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [{"at": a, "actor": b, "action": c, "detail": json.loads(d)} | ({"token_id": t} if t else {})
                for a, b, c, d, t in rows]

    def checkin(self, report: dict[str, Any], *, host_key: str | None = None, token_id: str = "") -> str:
        """Record a host's report; returns its identity ("key" when bound to a host key, else "none").

        A host's first check-in with ``host_key`` binds that key to its host_id; from then on every
        check-in for that host_id must carry the same key, else :class:`HostIdentityError` and nothing
        is written. Hosts that never sent a key stay "none" (flagged in the fleet list).
        """
        host = report["host_id"]
        with self._lock:
            if host_key is not None:
                self._db.execute("INSERT INTO host_keys VALUES (?, ?, ?, ?) ON CONFLICT(host_id) DO NOTHING",
                                 (host, _hash(host_key), _now(), token_id))
            row = self._db.execute("SELECT key_hash FROM host_keys WHERE host_id = ?", (host,)).fetchone()
            _check_host_key(host, row[0] if row else None, host_key)
            self._db.execute(
                "INSERT INTO fleet VALUES (:host_id, :version, :slot, :channel, :health, :last_error, :seen) "
                "ON CONFLICT(host_id) DO UPDATE SET version=excluded.version, slot=excluded.slot, "
                "channel=excluded.channel, health=excluded.health, last_error=excluded.last_error, "
                "last_seen=excluded.last_seen", {**report, "seen": _now()})
        return "key" if row else "none"

    def forget_host(self, host_id: str) -> bool:
        """Unbind a host's key (it re-binds at its next check-in with a key); True if one was bound."""
        with self._lock:
            return self._db.execute("DELETE FROM host_keys WHERE host_id = ?", (host_id,)).rowcount > 0

    def fleet(self, limit: int = FLEET_PAGE, after: str | None = None) -> list[dict[str, Any]]:
        """Hosts in host_id order after ``after`` (keyset pagination: each page costs the same)."""
        rows = self._x(f"SELECT {_FLEET_SELECT} WHERE f.host_id > ? ORDER BY f.host_id LIMIT ?",
                       (after or "", limit))
        return [dict(zip((*_FLEET_COLUMNS, "identity"), r)) for r in rows]

    def fleet_summary(self) -> dict[str, Any]:
        total = self._x("SELECT count(*) FROM fleet")[0][0]
        return _summary(total, self._x("SELECT health, count(*) FROM fleet GROUP BY health"),
                        self._x("SELECT version, count(*) FROM fleet GROUP BY version ORDER BY count(*) DESC LIMIT 20"))

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---- PostgreSQL -----------------------------------------------------------------------------------

_PG_PARAMS = ("host", "port", "sslmode", "sslrootcert", "connect_timeout", "application_name")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_URL_HINT = ("the form is postgresql://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=require] "
                "(the password may instead come from PGPASSWORD)")


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        query = parts.query
        if any(k == "password" for k, _ in parse_qsl(query, keep_blank_values=True)):
            query = "&".join(f"{k}=***" if k == "password" else f"{k}={quote(v, safe='/:')}"
                             for k, v in parse_qsl(query, keep_blank_values=True))
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "postgresql://…"


@dataclass(frozen=True)
class PostgresTarget:
    """Where and how to connect, parsed from a ``postgresql://`` URL (libpq's names and defaults)."""

    url: str  # redacted: safe for messages and logs
    user: str
    database: str
    host: str | None = None  # TCP host, or None with unix_sock
    port: int = 5432
    unix_sock: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    timeout: float = 10.0
    application_name: str = "qx-update-server"

    @property
    def where(self) -> str:
        return f"unix socket {self.unix_sock}" if self.unix_sock else f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        """pg8000's ``ssl_context``: False = plain, None = TLS if the server offers it, else a context."""
        if self.sslmode == "disable" or self.unix_sock:
            return False
        if self.sslmode in ("allow", "prefer"):
            return None
        if self.sslmode == "require":
            return True  # encrypted, certificate not checked (libpq's meaning of require)
        ctx = ssl.create_default_context(cafile=self.sslrootcert)
        ctx.check_hostname = self.sslmode == "verify-full"
        return ctx


def _url_host(netloc: str) -> str:
    """The host part of ``netloc`` as written (case kept, ``%2F`` decoded: a socket directory may be there)."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    host, sep, port = hostport.rpartition(":")
    return unquote(host if sep and port.isdigit() else hostport if not sep else host)


def parse_postgres_url(url: str) -> PostgresTarget:
    """``postgresql://[USER[:PASSWORD]@][HOST][:PORT][/DATABASE][?OPTIONS]`` → :class:`PostgresTarget`.

    As with libpq: the user defaults to ``PGUSER`` or the login name, the database to the user name,
    the password to ``PGPASSWORD`` (keeps it out of the process list); HOST (or ``?host=``) starting
    with ``/`` is the directory of a unix socket, and no host at all means ``/var/run/postgresql``.
    Options: ``sslmode`` (disable, allow, prefer — the default —, require, verify-ca, verify-full),
    ``sslrootcert`` (CA file for verify-*), ``connect_timeout`` (seconds to wait for a connection or
    an answer, default 10), ``application_name``.
    """
    shown = redact_url(url)

    def bad(what: str) -> UserError:
        return UserError(f"--database {shown}: {what}", hint=_PG_URL_HINT)

    try:
        parts = urlsplit(url)
        port_text = parts.port
    except ValueError as e:
        raise bad(f"not a valid URL ({e})") from e
    if parts.scheme not in ("postgresql", "postgres"):
        raise bad("the scheme must be postgresql://")
    query: dict[str, str] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k not in _PG_PARAMS:
            raise bad(f"unsupported option {k!r} (supported: {', '.join(_PG_PARAMS)})")
        query[k] = v
    host = _url_host(parts.netloc)
    if "host" in query:
        host = query["host"]
    port = port_text or 5432
    if "port" in query:
        if not query["port"].isdigit() or not 0 < int(query["port"]) < 65536:
            raise bad(f"port {query['port']!r} is not a port number")
        port = int(query["port"])
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in _SSLMODES:
        raise bad(f"sslmode {sslmode!r} is not one of {', '.join(_SSLMODES)}")
    try:
        timeout = float(query.get("connect_timeout", "10"))
        if not timeout > 0:
            raise ValueError
    except ValueError as e:
        raise bad(f"connect_timeout {query['connect_timeout']!r} is not a number of seconds > 0") from e
    user = unquote(parts.username) if parts.username else os.environ.get("PGUSER") or getpass.getuser()
    password = unquote(parts.password) if parts.password is not None else os.environ.get("PGPASSWORD")
    database = unquote(parts.path.lstrip("/")) or user
    if "/" in database:
        raise bad(f"database name {database!r} contains '/'")
    unix_sock = None
    if not host or host.startswith("/"):
        unix_sock = f"{(host or '/var/run/postgresql').rstrip('/')}/.s.PGSQL.{port}"
    return PostgresTarget(url=shown, user=user, database=database, host=None if unix_sock else host, port=port,
                          unix_sock=unix_sock, password=password, sslmode=sslmode,
                          sslrootcert=query.get("sslrootcert"), timeout=timeout,
                          application_name=query.get("application_name", "qx-update-server"))


# Tables as in SQLite (same columns, same text timestamps), in PostgreSQL's dialect.
_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, "
    "created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS releases (version TEXT PRIMARY KEY, published_by TEXT NOT NULL, "
    "published_at TEXT NOT NULL, manifest TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TEXT NOT NULL, "
    "actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fleet (host_id TEXT PRIMARY KEY, version TEXT NOT NULL, slot TEXT NOT NULL, "
    "channel TEXT NOT NULL, health TEXT NOT NULL, last_error TEXT, last_seen TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS host_keys (host_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, bound_at TEXT NOT NULL, "
    "token_id TEXT NOT NULL)",
    *(f"ALTER TABLE tokens ADD COLUMN IF NOT EXISTS {c} TEXT" for c in _TOKEN_COLUMNS_ADDED),
    "ALTER TABLE audit ADD COLUMN IF NOT EXISTS token_id TEXT",
    _FILL_IDS,
    _RENAME_DUPLICATES,
    _NAME_INDEX,
)
# pg_advisory_xact_lock key held while creating the tables: CREATE TABLE IF NOT EXISTS alone can still
# fail with a unique violation when two servers start at the same moment.
_SCHEMA_LOCK = 0x71785F7570647376  # "qx_updsv"
# SQLSTATEs after which a connection is gone: class 08 (connection exception) and 57P01-57P03
# (the server shut down or restarted).
_CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")


def _pg_fields(e: BaseException) -> dict[str, str]:
    arg = e.args[0] if e.args else None
    return arg if isinstance(arg, dict) else {}


def _cause(e: BaseException) -> str:
    """The most useful one-line reason in a pg8000 exception (its socket error, or the server's message)."""
    f = _pg_fields(e)
    if f:
        return f.get("M", str(e)) + (f" ({f['D']})" if f.get("D") else "")
    inner = e.__cause__ or e.__context__
    if isinstance(inner, OSError):
        return inner.strerror or str(inner) or type(inner).__name__
    return str(e) or type(e).__name__


class PostgresStorage:
    """The same tables as SQLite in a PostgreSQL database; a small pool of pg8000 connections.

    pg8000 connections are not thread-safe: each call borrows one (at most ``pool_size`` at once;
    the web server runs handlers in threads) and returns it. Statements run in autocommit mode, each
    one atomic on its own — which is all the interface needs (the check-in is one upsert). A
    connection the database dropped (restart, ``pg_terminate_backend``) is discarded with every idle
    one, and the call is tried once more on a fresh connection.
    """

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        try:
            import pg8000.native  # noqa: F401 - imported here: the SQLite default needs no driver
        except ImportError as e:
            raise EnvironmentError_(
                f"--database {redact_url(url)}: the PostgreSQL driver (pg8000) is not installed",
                hint="pip install 'quantix-os[postgres]' (or: pip install pg8000)") from e
        self.target = parse_postgres_url(url)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._last_used = _LastUsed()
        con = self._connect()
        try:
            self._create_schema(con)
        except BaseException:
            self._close_quietly(con)
            raise
        self._idle.append(con)

    # -- connections --

    def _connect(self) -> Any:
        import pg8000.native as pg

        t = self.target
        try:
            return pg.Connection(t.user, host=t.host or "localhost", port=t.port, database=t.database,
                                 password=t.password, unix_sock=t.unix_sock, ssl_context=t.ssl_context(),
                                 timeout=t.timeout, application_name=t.application_name)
        except pg.DatabaseError as e:
            raise self._refused(e) from e
        except (pg.InterfaceError, OSError) as e:
            raise EnvironmentError_(
                f"--database {t.url}: cannot reach the PostgreSQL server at {t.where}: {_cause(e)}",
                hint=f"is PostgreSQL running and accepting connections at {t.where}? Check the host and port "
                     "in the URL, listen_addresses and port in postgresql.conf, and any firewall between; "
                     + _PG_URL_HINT) from e

    def _refused(self, e: BaseException) -> Exception:
        """A server's answer to a connection attempt, as an error naming the URL and the fix."""
        t = self.target
        f = _pg_fields(e)
        code, msg = f.get("C", ""), f"--database {t.url}: PostgreSQL refused the connection: {_cause(e)}"
        if code == "28P01":
            return UserError(msg, hint=f"check the user ({t.user}) and the password (in the URL or PGPASSWORD)")
        if code == "28000":
            return EnvironmentError_(msg, hint=f"allow user {t.user} from this machine in the server's "
                                               "pg_hba.conf, then reload PostgreSQL")
        if code == "3D000":
            return EnvironmentError_(msg, hint=f"create it as a PostgreSQL superuser: "
                                               f"createdb --owner={t.user} {t.database}")
        if code.startswith("57P0") or code == "53300":
            return EnvironmentError_(msg, hint="the server is starting, stopping or full; try again shortly")
        return ExternalError(msg)

    def _create_schema(self, con: Any) -> None:
        import pg8000.native as pg

        t = self.target
        try:
            con.run("BEGIN")
            try:
                con.run("SELECT pg_advisory_xact_lock(:k)", k=_SCHEMA_LOCK)
                for sql in _PG_SCHEMA:
                    con.run(sql)
                con.run("COMMIT")
            except BaseException:
                try:
                    con.run("ROLLBACK")
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                raise
        except pg.DatabaseError as e:
            hint = None
            if _pg_fields(e).get("C") == "42501":
                hint = (f"let {t.user} create tables: make it the owner of database {t.database}, "
                        f"or GRANT CREATE ON SCHEMA public TO {t.user}")
            raise EnvironmentError_(f"--database {t.url}: cannot create the tables: {_cause(e)}", hint=hint) from e
        except (pg.InterfaceError, OSError) as e:
            raise EnvironmentError_(f"--database {t.url}: lost the connection to PostgreSQL at {t.where} while "
                                    f"creating the tables: {_cause(e)}") from e

    @staticmethod
    def _close_quietly(con: Any) -> None:
        try:
            con.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to say goodbye
            pass

    def _x(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run one statement on a pooled connection; retry once on a fresh one if the old one died."""
        import pg8000.native as pg

        if self._closed:
            raise EnvironmentError_(f"--database {self.target.url}: the storage is closed")
        with self._slots:
            for attempt in (1, 2):
                with self._lock:
                    con = self._idle.pop() if self._idle else None
                reused = con is not None
                if con is None:
                    con = self._connect()
                try:
                    rows = con.run(sql, **params)
                except (pg.InterfaceError, OSError, pg.DatabaseError) as e:
                    lost = not isinstance(e, pg.DatabaseError) or \
                        _pg_fields(e).get("C", "").startswith(_CONNECTION_LOST)
                    if not lost:  # the statement failed; the connection is fine
                        self._give_back(con)
                        raise ExternalError(f"--database {self.target.url}: {_cause(e)}") from e
                    self._close_quietly(con)
                    self._drop_idle()  # they went down with it (a restart), most likely
                    if reused and attempt == 1:
                        continue
                    raise EnvironmentError_(
                        f"--database {self.target.url}: lost the connection to PostgreSQL at "
                        f"{self.target.where}: {_cause(e)}",
                        hint="is the database server up? The update server reconnects by itself") from e
                self._give_back(con)
                return rows
        raise AssertionError("unreachable")

    def _give_back(self, con: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(con)
                return
        self._close_quietly(con)

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            self._close_quietly(c)

    # -- the Storage interface --

    def create_token(self, name: str, scopes: list[str], *, expires_days: float | None = None,
                     host_id: str | None = None) -> str:
        secret, tid, stored, expires = _new_token(name, scopes, expires_days, host_id)
        try:
            self._x("INSERT INTO tokens (hash, name, scopes, created, id, expires, host_id) "
                    "VALUES (:h, :n, :s, :c, :i, :e, :host)",
                    h=_hash(secret), n=name, s=stored, c=_now(), i=tid, e=expires, host=host_id)
        except ExternalError as e:
            if _pg_fields(e.__cause__ or e).get("C") == "23505":  # unique_violation
                raise _duplicate_name(name) from e
            raise
        return secret

    def lookup_token(self, secret: str) -> Token | None:
        h = _hash(secret)
        rows = self._x("SELECT name, scopes, id, expires, revoked, host_id FROM tokens WHERE hash = :h", h=h)
        if not rows:
            return None
        name, scopes, tid, expires, revoked, host_id = rows[0]
        now = _now()
        if revoked or (expires and expires <= now):
            return None
        if self._last_used.due(h):
            self._x("UPDATE tokens SET last_used = :now WHERE hash = :h", now=now, h=h)
        return Token(name, frozenset(scopes.split(",")), tid, host_id)

    def list_tokens(self) -> list[dict[str, Any]]:
        return [_token_row(r) for r in self._x(
            "SELECT id, name, scopes, created, expires, last_used, revoked, host_id FROM tokens ORDER BY created, id")]

    def revoke_token(self, which: str) -> dict[str, Any]:
        rows = self._x("UPDATE tokens SET revoked = :now WHERE (id = :w OR name = :w) AND revoked IS NULL "
                       "RETURNING id, name, scopes, created, expires, last_used, revoked, host_id", now=_now(), w=which)
        if not rows:
            raise UserError(f"token {which!r}: no such token that is not revoked already",
                            hint="see qx-update-server token list (give the id or the name)")
        return _token_row(rows[0])

    def record_release(self, version: str, by: str, manifest: dict[str, Any]) -> None:
        self._x("INSERT INTO releases (version, published_by, published_at, manifest) VALUES (:v, :b, :at, :m) "
                "ON CONFLICT (version) DO UPDATE SET published_by = EXCLUDED.published_by, "
                "published_at = EXCLUDED.published_at, manifest = EXCLUDED.manifest",
                v=version, b=by, at=_now(), m=json.dumps(manifest))

    def release_records(self) -> dict[str, dict[str, Any]]:
        return {v: {"published_by": b, "published_at": at, "manifest": json.loads(m)}
                for v, b, at, m in self._x("SELECT version, published_by, published_at, manifest FROM releases")}

    def audit(self, actor: str, action: str, detail: dict[str, Any], token_id: str | None = None) -> None:
        self._x("INSERT INTO audit (at, actor, action, detail, token_id) VALUES (:at, :actor, :action, :detail, :t)",
                at=_now(), actor=actor, action=action, detail=json.dumps(detail, sort_keys=True), t=token_id)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._x("SELECT at, actor, action, detail, token_id FROM audit ORDER BY id DESC LIMIT :n", n=int(limit))
        return [{"at": a, "actor": b, "action": c, "detail": json.loads(d)} | ({"token_id": t} if t else {})
                for a, b, c, d, t in rows]

    def forget_host(self, host_id: str) -> bool:
        return bool(self._x("DELETE FROM host_keys WHERE host_id = :h RETURNING host_id", h=host_id))

    def checkin(self, report: dict[str, Any], *, host_key: str | None = None, token_id: str = "") -> str:
        """As :meth:`SQLiteStorage.checkin`: a bound host key must match; then one upsert."""
        host = report["host_id"]
        if host_key is not None:  # first binding wins, also between servers (the primary key decides)
            self._x("INSERT INTO host_keys VALUES (:h, :k, :at, :t) ON CONFLICT (host_id) DO NOTHING",
                    h=host, k=_hash(host_key), at=_now(), t=token_id)
        rows = self._x("SELECT key_hash FROM host_keys WHERE host_id = :h", h=host)
        _check_host_key(host, rows[0][0] if rows else None, host_key)
        # One statement: concurrent check-ins of the same host resolve in the database, last one wins.
        self._x("INSERT INTO fleet (host_id, version, slot, channel, health, last_error, last_seen) "
                "VALUES (:host_id, :version, :slot, :channel, :health, :last_error, :seen) "
                "ON CONFLICT (host_id) DO UPDATE SET version = EXCLUDED.version, slot = EXCLUDED.slot, "
                "channel = EXCLUDED.channel, health = EXCLUDED.health, last_error = EXCLUDED.last_error, "
                "last_seen = EXCLUDED.last_seen",
                **{k: report.get(k) for k in _FLEET_COLUMNS[:-1]}, seen=_now())
        return "key" if rows else "none"

    def fleet(self, limit: int = FLEET_PAGE, after: str | None = None) -> list[dict[str, Any]]:
        # COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        rows = self._x(f"SELECT {_FLEET_SELECT} WHERE f.host_id COLLATE \"C\" > :a "
                       "ORDER BY f.host_id COLLATE \"C\" LIMIT :n", a=after or "", n=int(limit))
        return [dict(zip((*_FLEET_COLUMNS, "identity"), r)) for r in rows]

    def fleet_summary(self) -> dict[str, Any]:
        total = self._x("SELECT count(*) FROM fleet")[0][0]
        return _summary(total, self._x("SELECT health, count(*) FROM fleet GROUP BY health"),
                        self._x("SELECT version, count(*) FROM fleet GROUP BY version ORDER BY count(*) DESC LIMIT 20"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_idle()


def open_storage(data_dir: Path, url: str | None = None) -> Storage:
    """``None`` → SQLite in ``data_dir``; ``sqlite:///PATH`` → SQLite there; ``postgresql://…`` → PostgreSQL."""
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(data_dir / "server.db")
    if url.startswith("sqlite:///"):
        return SQLiteStorage(Path(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(url)
    raise UserError(f"--database: unsupported URL {redact_url(url)!r}",
                    hint="use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
