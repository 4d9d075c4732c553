"""Where the unattended install finds its answer: a real HTTP server on 127.0.0.1, a real labelled
volume on a loop device, the medium's directory — and the failures that must not fall through."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_common.errors import ExternalError, UserError
from qx_install import sources

ANSWER = b'hostname = "from-somewhere"\n'


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        code, body = self.routes.get(self.path, (404, b"no"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.routes = {"/a.toml": (200, ANSWER), "/big.toml": (200, b"#" * (sources.MAX_BYTES + 1)),
                       "/flaky.toml": (503, b"later")}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_url_with_and_without_pin(server: str) -> None:
    where, data = sources.find_answer(cmdline=f"quiet qx.answer={server}/a.toml", media_dirs=[])
    assert data == ANSWER and where == f"url {server}/a.toml"
    pin = hashlib.sha256(ANSWER).hexdigest()
    where, data = sources.find_answer(cmdline=f"qx.answer={server}/a.toml qx.answer.sha256={pin}", media_dirs=[])
    assert data == ANSWER and "pinned" in where


@pytest.mark.parametrize("cmdline, error, text", [
    ("qx.answer={s}/a.toml qx.answer.sha256=" + "0" * 64, UserError, "does not match qx.answer.sha256"),
    ("qx.answer={s}/a.toml qx.answer.sha256=xyz", UserError, "64 hexadecimal"),
    ("qx.answer={s}/missing.toml", ExternalError, "HTTP 404"),
    ("qx.answer={s}/big.toml", UserError, "larger than"),
    ("qx.answer=ftp://x/a.toml", UserError, "not an http or https URL"),
    ("qx.answer.sha256=" + "0" * 64, UserError, "without qx.answer"),
])
def test_a_named_source_that_fails_is_an_error_not_a_fall_through(server: str, tmp_path: Path, cmdline: str,
                                                                   error: type, text: str) -> None:
    medium = tmp_path / "medium"
    (medium / "quantix").mkdir(parents=True)
    (medium / "quantix/answer.toml").write_bytes(b"# would be found next\n")
    with pytest.raises(error) as e:
        sources.find_answer(cmdline=cmdline.format(s=server), media_dirs=[medium])
    assert text in str(e.value)


def test_an_unreachable_url_gives_up_at_the_deadline(server: str) -> None:
    with pytest.raises(ExternalError, match="within 2 s"):
        sources.find_answer(cmdline=f"qx.answer={server}/flaky.toml", media_dirs=[], timeout=2)


def test_the_medium_and_nothing(tmp_path: Path) -> None:
    assert sources.find_answer(cmdline="quiet", media_dirs=[tmp_path]) is None
    (tmp_path / "quantix").mkdir()
    (tmp_path / "quantix/answer.toml").write_bytes(ANSWER)
    where, data = sources.find_answer(cmdline="quiet", media_dirs=[tmp_path])
    assert data == ANSWER and where.startswith("medium ")


@pytest.mark.root
def test_a_volume_labelled_qxanswer(tmp_path: Path) -> None:
    # ext4 here (this machine's kernel has no vfat; the QEMU e2e uses a vfat stick).
    img = tmp_path / "answer.img"
    with img.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    src = tmp_path / "src"
    src.mkdir()
    (src / "answer.toml").write_bytes(ANSWER)
    subprocess.run(["mkfs.ext4", "-q", "-L", sources.LABEL, "-d", str(src), str(img)], check=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        where, data = sources.find_answer(cmdline="quiet", media_dirs=[])
        assert data == ANSWER and sources.LABEL in where
        (src / "answer.toml").unlink()
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
