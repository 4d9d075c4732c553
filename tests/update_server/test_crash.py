"""kill -9 at each step of a change: the repository on disk still verifies, and a retry succeeds.

The real server runs in a subprocess with ``QX_SERVER_TEST_CRASH_AT=<step>``; at that step
``fsutil.crashpoint`` sends the process SIGKILL (no cleanup, no atexit, no flush). Then:

1. python-tuf's ngclient verifies the repository directory *as the crash left it*, served by a plain
   static web server — no repair has run, so this proves the on-disk order alone keeps it valid;
2. the server is restarted without the hook (``repair()`` and the staging clean-up run at start), the
   repository verifies through it, and the interrupted change is retried through ``qx-release``.

Steps before ``timestamp`` must show the previous state; ``timestamp`` is the commit point, so a
crash right after it shows the new state and the retry is refused as a duplicate with a clear error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from .conftest import ALL, Server, qx_release, start_server, verify_repo, write_release

OLD = {"0.2.0/quantix-os_0.2.0.root.erofs.zst", "0.2.0/quantix-os_0.2.0.efi"}
NEW = OLD | {"0.3.0/quantix-os_0.3.0.root.erofs.zst", "0.3.0/quantix-os_0.3.0.efi"}


def _crashed_server(data: Path, step: str) -> Server:
    return start_server(data, env={"QX_SERVER_TEST_CRASH_AT": step})


def _wait_killed(s: Server) -> None:
    try:
        code = s.proc.wait(30)
    finally:
        s.stop()  # no-op when the hook fired; never leaves a server behind when it did not
    assert code == -9, s.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, str, bytes]:
    """Once per module: a data directory with keys and release 0.2.0, made by a normal server."""
    base = tmp_path_factory.mktemp("prepared")
    s = start_server(base / "data")
    try:
        token = s.token(*ALL)
        qx_release(s, token, "keys", "init")
        qx_release(s, token, "publish", str(write_release(base / "builds", "0.2.0")))
        root_v1 = requests.get(s.url + "/metadata/1.root.json", timeout=5).content
    finally:
        s.stop()
    return base / "data", token, root_v1


def _prepare(tmp_path: Path, prepared: tuple[Path, str, bytes]) -> tuple[Path, str, bytes]:
    """A private copy of the prepared data directory (keys, database, repository)."""
    src, token, root_v1 = prepared
    shutil.copytree(src, tmp_path / "data", symlinks=True)
    return tmp_path / "data", token, root_v1


@pytest.mark.parametrize("step", ["artifacts", "targets", "snapshot", "timestamp"])
def test_kill_during_publish(step, tmp_path, make_release, static_server, prepared):
    data, token, root_v1 = _prepare(tmp_path, prepared)
    build = make_release("0.3.0")

    s = _crashed_server(data, step)
    p = qx_release(s, token, "publish", str(build), check=False)
    _wait_killed(s)
    assert p.returncode != 0

    expected = NEW if step == "timestamp" else OLD
    assert set(verify_repo(static_server(data / "repository"), root_v1, tmp_path)) == expected

    s = start_server(data)
    try:
        assert set(verify_repo(s.url, root_v1, tmp_path)) == expected
        assert not any((data / "staging").iterdir())  # the dead upload was cleaned at start
        retry = qx_release(s, token, "publish", str(build), check=False)
        if step == "timestamp":
            assert retry.returncode == 2 and "0.3.0 is already published" in retry.stderr
        else:
            assert retry.returncode == 0, retry.stderr
        assert set(verify_repo(s.url, root_v1, tmp_path)) == NEW
    finally:
        s.stop()


def test_kill_during_key_rotation(tmp_path, make_release, static_server, prepared):
    """Crash after N+1.root.json is written but before root.json: hosts on root v1 still verify."""
    data, token, root_v1 = _prepare(tmp_path, prepared)
    s = _crashed_server(data, "root")
    p = qx_release(s, token, "keys", "rotate", check=False)
    _wait_killed(s)
    assert p.returncode != 0
    assert set(verify_repo(static_server(data / "repository"), root_v1, tmp_path)) == OLD

    s = start_server(data)  # repair() finishes the rotation
    try:
        assert "finishing an interrupted key rotation" in s.log.read_text()
        assert set(verify_repo(s.url, root_v1, tmp_path)) == OLD
        qx_release(s, token, "publish", str(make_release("0.3.0")))
        assert set(verify_repo(s.url, root_v1, tmp_path)) == NEW
        status = requests.get(s.url + "/v1/keys/status", headers={"Authorization": f"Bearer {token}"},
                              timeout=5).json()
        assert status["roles"]["root"]["version"] == 2
        assert (data / "repository/metadata/root.json").read_bytes() == \
            (data / "repository/metadata/2.root.json").read_bytes()
    finally:
        s.stop()
