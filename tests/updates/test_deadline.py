"""The overall deadline per download (slow-retrieval attack), against a real trickling server on 127.0.0.1.

The server sends correct headers and then one byte per second: no socket read ever waits long enough
for a gap timeout, so only the deadline stops the download. Both an artifact (through ``qx-update
apply`` with ``download_deadline`` in update.toml) and a metadata file (through qx-update's repository
client) are proven to fail with an error naming the deadline, leaving the installed system unchanged
and keeping what arrived for a resume.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qx_common.errors import ExternalError, UserError
from qx_update import config
from qx_update.repo import open_repo

from .conftest import Host, make_host, payload
from .tufrepo import TufRepo


class Trickle:
    """Serve ``base``; paths for which ``slow(path)`` holds get their body one byte per ``interval`` s."""

    def __init__(self, base: Path, slow: Callable[[str], bool], interval: float = 1.0) -> None:
        outer = self
        self.trickled: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = (base / self.path.lstrip("/")).resolve()
                if not path.is_relative_to(base.resolve()) or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not slow(self.path):
                    self.wfile.write(data)
                    return
                outer.trickled.append(self.path)
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(interval)
                except OSError:
                    pass  # the client gave up: what a deadline is for

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def trickle(repo: TufRepo) -> Iterator[Callable[..., Trickle]]:
    servers: list[Trickle] = []

    def start(slow: Callable[[str], bool]) -> Trickle:
        servers.append(Trickle(repo.base, slow))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_trickled_artifact_fails_at_the_deadline_and_changes_nothing(tmp_path: Path, repo: TufRepo,
                                                                      trickle: Callable[..., Trickle]) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(1), channels=["stable"])
    srv = trickle(lambda p: p.startswith("/targets/") and p.endswith(".root.erofs.zst"))
    host: Host = make_host(tmp_path / "host", repo.root_bytes, srv.url)
    host.write_config(download_deadline=2)
    before = host.fingerprint()
    p = host.run("apply", check=False)
    assert p.returncode == 4, p.stderr
    assert "not complete within the download deadline of 2 s" in p.stderr
    assert "slow-retrieval" in p.stderr and "download_deadline" in p.stderr  # the hint names the setting
    assert srv.trickled, "the payload was requested from the trickling server"
    assert host.fingerprint() == before
    parts = list((host.state_dir / "downloads").glob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < 30  # kept for the next run to resume


def test_trickled_metadata_fails_at_the_deadline(tmp_path: Path, repo: TufRepo,
                                                 trickle: Callable[..., Trickle]) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(1), channels=["stable"])
    srv = trickle(lambda p: p.endswith("timestamp.json"))
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes)
    rp = open_repo(trusted_root=root, metadata_dir=tmp_path / "md", base_url=srv.url, download_deadline=2)
    with pytest.raises(ExternalError) as e:
        rp.refresh()
    assert "download deadline of 2 s" in e.value.message and "timestamp.json" in e.value.message
    assert srv.trickled == ["/metadata/timestamp.json"]


def test_the_same_servers_without_trickling_deliver(tmp_path: Path, repo: TufRepo,
                                                    trickle: Callable[..., Trickle]) -> None:
    """The deadline alone does not fail a download: the fixture server serves fast when not trickling."""
    repo.add_release("1.1.0", slot_bytes=payload(1), channels=["stable"])
    srv = trickle(lambda p: False)
    host = make_host(tmp_path / "host", repo.root_bytes, srv.url)
    host.write_config(download_deadline=2)
    assert host.json("apply")["applied"]["version"] == "1.1.0"


@pytest.mark.parametrize("value", [0, -5, 86401, "fast", True])
def test_download_deadline_setting_is_checked(tmp_path: Path, value: object) -> None:
    f = tmp_path / "update.toml"
    f.write_text(f"download_deadline = {value!r}\n".replace("True", "true").replace("'", '"'))
    with pytest.raises(UserError) as e:
        config.load(f)
    assert "download_deadline" in e.value.message and "86400" in (e.value.hint or "")
