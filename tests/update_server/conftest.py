"""Fixtures for the update server tests: real release files, real HTTP servers, python-tuf's ngclient.

* ``make_release(version)`` writes a tiny but real release directory: a zstd-compressed payload made
  with the ``zstd`` CLI, an .efi, a manifest in the format of ``qx_build.artifacts.build_manifest``
  and a SHA256SUMS — exactly what ``make image`` leaves in ``build/``.
* ``verify_repo(base_url, root)`` is the acceptance check after every operation: python-tuf's own
  ngclient, bootstrapped with a trusted root, refreshes over HTTP and downloads and verifies every
  target the signed metadata lists. It returns the verified targets (path -> custom.quantix).
* ``server`` runs the real app under uvicorn in a subprocess on a free 127.0.0.1 port;
  ``server_no_resign`` is one whose re-signer stays idle during the test, and
  ``sign_expiring_soon(data_dir, …)`` signs a repository whose root and timestamp expire soon.
* ``pg_cluster`` (session) is a real, throwaway PostgreSQL server (:mod:`.pgcluster`, needs root);
  ``pg_url`` is a fresh database on it for one test, as a ``postgresql://`` URL for ``--database``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import Updater

from qx_update.chunkindex import ChunkIndex, chunk_path
from qx_update.contract import INDEX_OF

from qx_common.run import run
from qx_update_server.repository import LIFETIME, Repository, utcnow

ROOT = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_release(base: Path, version: str, *, size: int = 8192, epoch: int = 0, zstd_level: int = 19) -> Path:
    """A release directory as qx-build writes it (minus the .raw/.iso, which are not published).

    ``zstd_level`` exists for the benchmark, whose 150 MB payload would take minutes at -19.
    """
    d = base / f"build-{version}"
    n = 0
    while d.exists():
        n += 1
        d = base / f"build-{version}-{n}"
    d.mkdir(parents=True)
    erofs = d / "root.erofs"
    erofs.write_bytes(os.urandom(size // 2) + bytes(size - size // 2))
    name = f"quantix-os_{version}"
    run(["zstd", "-q", f"-{zstd_level}", "-T0", str(erofs), "-o", str(d / f"{name}.root.erofs.zst")])
    raw = erofs.read_bytes()
    erofs.unlink()
    (d / f"{name}.efi").write_bytes(b"MZ" + os.urandom(4000))

    def describe(p: Path) -> dict[str, Any]:
        return {"file": p.name, "size": p.stat().st_size, "sha256": _sha(p.read_bytes())}

    root = describe(d / f"{name}.root.erofs.zst") | {
        "uncompressed_size": len(raw), "uncompressed_sha256": _sha(raw), "slot_size_min": len(raw)}
    fake = {"file": f"{name}.raw", "size": 1, "sha256": "0" * 64}
    manifest = {
        "format": 1, "product": "Quantix OS", "image_id": "quantix-os", "version": version,
        "security_epoch": epoch, "architecture": "x86-64", "source_date_epoch": 1700000000,
        "build_time": "2023-11-14T22:13:20Z",
        "kernel_cmdline": "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0",
        "packages": [{"name": "linux-image-amd64", "version": "6.1"}],
        "artifacts": {"root": root, "uki": describe(d / f"{name}.efi"), "disk": fake,
                      "iso": fake | {"file": f"{name}.iso"}},
    }
    (d / f"{name}.manifest.json").write_text(json.dumps(manifest, indent=2))
    files = sorted(p for p in d.iterdir())
    (d / "SHA256SUMS").write_text("".join(f"{_sha(p.read_bytes())}  {p.name}\n" for p in files))
    return d


@pytest.fixture
def make_release(tmp_path: Path) -> Callable[..., Path]:
    return partial(write_release, tmp_path / "builds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StaticServer:
    url: str
    httpd: http.server.ThreadingHTTPServer


@pytest.fixture
def static_server() -> Iterator[Callable[[Path], str]]:
    """Serve a directory over HTTP on 127.0.0.1 (a stand-in for any plain web server or CDN)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = partial(_QuietHandler, directory=str(directory))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def verify_repo(base_url: str, trusted_root: bytes, workdir: Path) -> dict[str, dict[str, Any]]:
    """Refresh with python-tuf's ngclient and download + verify every target; return path -> quantix."""
    md_dir = workdir / f"ngclient-{time.monotonic_ns()}"
    tgt_dir = md_dir / "targets"
    tgt_dir.mkdir(parents=True)
    updater = Updater(metadata_dir=str(md_dir), metadata_base_url=f"{base_url}/metadata/",
                      target_dir=str(tgt_dir), target_base_url=f"{base_url}/targets/", bootstrap=trusted_root)
    updater.refresh()
    top = Metadata[Targets].from_file(str(md_dir / "targets.json")).signed
    paths = list(top.targets)
    for name, role in (top.delegations.roles or {}).items() if top.delegations else ():
        assert role.terminating and len(role.paths) == 1 and role.paths[0].endswith("/*"), role.to_dict()
        v = role.paths[0].removesuffix("/*")
        assert name == f"release-{v}"
        # the two artifacts and their chunk indexes (docs/update-format.md §5)
        mine = [f"{v}/quantix-os_{v}.efi", f"{v}/quantix-os_{v}.efi.chunks.json",
                f"{v}/quantix-os_{v}.root.chunks.json", f"{v}/quantix-os_{v}.root.erofs.zst"]
        # A path only the role could sign makes ngclient's walk load and verify it (the newest release of
        # each channel is also listed by the top-level role, where the walk would stop).
        assert updater.get_targetinfo(f"{v}/probe") is None
        # the role (persisted by ngclient once verified) signs exactly this release's four targets
        assert sorted(Metadata[Targets].from_file(str(md_dir / f"{name}.json")).signed.targets) == mine
        paths += [p for p in mine if p not in paths]
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        info = updater.get_targetinfo(path)
        assert info is not None, path
        updater.download_target(info, str(tgt_dir / path.replace("/", "_")))
        out[path] = info.custom["quantix"]
    # Each artifact's chunk index (docs/update-format.md §5) is signed beside it, describes exactly the
    # artifact's signed image, and every chunk it names is served and matches it. The result lists the
    # artifacts only (what a release is made of); the indexes are checked here.
    for path, q in list(out.items()):
        if q["artifact"] not in INDEX_OF.values():
            continue
        idx = ChunkIndex.from_json((tgt_dir / path.replace("/", "_")).read_bytes(), path)
        art = next(p for p, a in out.items() if a["version"] == q["version"] and INDEX_OF.get(a["artifact"]) == q["artifact"])
        info = updater.get_targetinfo(art)
        assert info is not None
        length, digest = (q["slot_size"], q["slot_sha256"]) if idx.artifact == "root" else (info.length, info.hashes["sha256"])
        idx.check_describes(version=q["version"], artifact=idx.artifact, length=length, sha256=digest, where=path)
        for c in {c.sha256: c for c in idx.chunks}.values():
            data = requests.get(f"{base_url}/targets/{chunk_path(c.sha256)}", timeout=30).content
            assert len(data) == c.stored_length and hashlib.sha256(data).hexdigest() == c.stored_sha256, path
        del out[path]
    return out


@dataclass
class Server:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    database: str | None = None

    def token(self, *scopes: str, name: str | None = None) -> str:
        return make_token(self.data_dir, *scopes, database=self.database, name=name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_token(data_dir: Path, *scopes: str, database: str | None = None, name: str | None = None) -> str:
    """A new token through the real CLI; names are unique, so each gets ``test-<random>`` unless given."""
    out = subprocess.run(
        [sys.executable, "-m", "qx_update_server.cli", "token", "create", "--data-dir", str(data_dir),
         "--name", name or f"test-{secrets.token_hex(3)}", "--scopes", ",".join(scopes),
         *(["--database", database] if database else [])],
        check=True, capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip()


def start_server(data_dir: Path, *, env: dict[str, str] | None = None, wait: bool = True,
                 extra_args: list[str] | None = None, database: str | None = None) -> Server:
    """``database``: a ``--database`` URL (tokens made with :meth:`Server.token` then go there too)."""
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qx_update_server.cli", "serve", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(data_dir), *(["--database", database] if database else []), *(extra_args or [])],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    if wait:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:  # refused, or accepted but not answering yet
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # never leave a half-started server behind
                proc.wait()
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
    return Server(url, data_dir, proc, log, database)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "data")
    yield s
    s.stop()


@pytest.fixture
def server_no_resign(tmp_path: Path) -> Iterator[Server]:
    """A server whose background re-signer does not run while a test does.

    The re-signer's first pass runs at start-up — before ``/healthz`` answers, so before a test can
    make keys — and the next one an hour later: metadata a test signs with a near expiry stays so.
    """
    s = start_server(tmp_path / "data", extra_args=["--refresh-interval", "3600"])
    yield s
    s.stop()


def sign_expiring_soon(data_dir: Path, *, root_left: dt.timedelta, timestamp_left: dt.timedelta) -> None:
    """Make keys and sign every role through :class:`Repository`'s own API with its clock set back.

    ``init`` signed ``LIFETIME["root"] - root_left`` ago leaves root expiring in ``root_left``; the
    online roles, long expired by then, are re-signed by ``refresh`` as of ``LIFETIME["timestamp"] -
    timestamp_left`` ago, so timestamp expires in ``timestamp_left`` and targets and snapshot much later.
    Nothing has expired yet: a TUF client still accepts the repository.
    """
    now = utcnow()
    repo = Repository(data_dir)
    repo.init(now=now - (LIFETIME["root"] - root_left))
    assert repo.refresh(now=now - (LIFETIME["timestamp"] - timestamp_left)) == ["targets", "snapshot", "timestamp"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A real PostgreSQL server for the whole session, stopped (``-m immediate``) and removed at the end.

    Fails (does not skip) without root or without Debian's ``postgresql``: a skipped PostgreSQL test
    would hide that the backend went unproven. Deselect with ``-m 'not root'``.
    """
    from .pgcluster import PgCluster

    try:
        cluster = PgCluster.start()
    except RuntimeError as e:
        pytest.fail(f"cannot start a test PostgreSQL server: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Any) -> Iterator[str]:
    """A fresh database (owned by the test user) for one test, as a ``postgresql://`` URL with a password."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


ALL = ("publish", "promote", "yank", "rollout", "keys", "read", "checkin")


def qx_release(server: Server, token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``qx-release`` CLI against ``server`` (token through the environment)."""
    env = {**os.environ, "QX_RELEASE_TOKEN": token}
    p = subprocess.run([sys.executable, "-m", "qx_update_server.release_cli", "--server", server.url, *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"qx-release {args} failed ({p.returncode}): {p.stderr}")
    return p


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path) of every route the app answers, from its OpenAPI description (the public view of
    the route table; the description is not served: ``openapi_url`` is off)."""
    return sorted((m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops)
