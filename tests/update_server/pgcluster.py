"""A throwaway PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary directory.

PostgreSQL refuses to run as root, so ``initdb`` and ``pg_ctl`` run as the ``postgres`` system user that
Debian's ``postgresql`` package creates (``runuser``; the tests therefore need root). The server listens
on 127.0.0.1 on a free port (password login, SCRAM) and on a unix socket in the cluster's directory
(trust, for the superuser's housekeeping). :meth:`PgCluster.stop` stops it with ``-m immediate`` and
removes the directory; nothing is left behind and the machine's own PostgreSQL (if any) is untouched.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from urllib.parse import quote

import pg8000.native

# Characters that must be escaped in a URL, to prove the server's URL parsing decodes them.
PASSWORD = "pw:@/ x%"
USER = "qx"
_names = count(1)


def find_bin() -> Path:
    """The newest installed server's bin directory (``/usr/lib/postgresql/<ver>/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); "
                           "apt-get install postgresql (it is in tests/host-packages.txt)")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    bin: Path
    base: Path
    port: int
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "server.log"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    def _as_postgres(self, *cmd: str) -> None:
        p = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / cmd[0]), *cmd[1:]],
                           cwd=self.base, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stdout}{p.stderr}\n{log}")

    @classmethod
    def start(cls) -> PgCluster:
        if os.geteuid() != 0:
            raise RuntimeError("needs root: PostgreSQL runs as the 'postgres' user (runuser)")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as e:
            raise RuntimeError("no 'postgres' system user; apt-get install postgresql") from e
        base = Path(tempfile.mkdtemp(prefix="qx-pg-"))
        os.chown(base, pw.pw_uid, pw.pw_gid)
        c = cls(find_bin(), base, _free_port())
        try:
            c.socket_dir.mkdir()
            os.chown(c.socket_dir, pw.pw_uid, pw.pw_gid)
            c._as_postgres("initdb", "-D", str(c.data), "-U", "postgres", "-E", "UTF8", "--no-locale",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
            # Throwaway: no fsync. listen only on loopback; the socket in our own directory.
            opts = (f"-c listen_addresses=127.0.0.1 -p {c.port} -k {c.socket_dir} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            c._as_postgres("pg_ctl", "-D", str(c.data), "-l", str(c.log), "-w", "-t", "60", "-o", opts, "start")
            c.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        except BaseException:
            c.stop()
            raise
        return c

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
                            "stop", "-m", "immediate"], cwd=self.base, capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    def admin(self, database: str = "postgres") -> pg8000.native.Connection:
        """A superuser connection over the unix socket (trust)."""
        return pg8000.native.Connection("postgres", unix_sock=str(self.socket_dir / f".s.PGSQL.{self.port}"),
                                        database=database)

    def sql(self, statement: str, database: str = "postgres", **params: object) -> list[list[object]]:
        con = self.admin(database)
        try:
            return con.run(statement, **params)
        finally:
            con.close()

    def url(self, database: str, *, password: str | None = PASSWORD, port: int | None = None) -> str:
        auth = USER if password is None else f"{USER}:{quote(password, safe='')}"
        return f"postgresql://{auth}@127.0.0.1:{port or self.port}/{database}"

    def create_database(self, owner: str = USER) -> str:
        """A fresh, empty database owned by the test user (as a real deployment's would be)."""
        name = f"qx_test_{next(_names)}"
        self.sql(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
