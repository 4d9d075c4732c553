"""Where the unattended install finds its answer file: a real HTTP(S) server on 127.0.0.1, real labelled
volumes on loop devices (FAT read with mtools, ext4 mounted read-only), the medium's directory — and the
failures of a named source, which must never fall through to the next one.

The slow server blocks on an event the fixture releases at teardown, so no test sleeps or times itself:
the code's own deadline ends the wait.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qx_common.errors import EnvironmentError_, ExternalError, UserError
from qx_install import answer, sources

ANSWER = b'hostname = "from-somewhere"\n'
MiB = 1024 * 1024


class Server:
    """Routes: path -> handler(request). Records every request path."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.paths: list[str] = []
        self.flaky_left = 2
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def send(self, code: int, body: bytes, length: bool = True) -> None:
                self.send_response(code)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.paths.append(self.path)
                p = self.path
                if p == "/a.toml":
                    self.send(200, ANSWER)
                elif p == "/big.toml":
                    self.send(200, b"#" * (sources.MAX_BYTES + 1))
                elif p == "/big-stream.toml":   # no Content-Length: the size shows only while reading
                    self.protocol_version = "HTTP/1.0"
                    self.send(200, b"#" * (sources.MAX_BYTES + 1), length=False)
                elif p == "/limit.toml":
                    self.send(200, b"#" * sources.MAX_BYTES)
                elif p == "/flaky.toml":
                    if server.flaky_left:
                        server.flaky_left -= 1
                        self.send(503, b"starting")
                    else:
                        self.send(200, ANSWER)
                elif p == "/down.toml":
                    self.send(503, b"down")
                elif p == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/a.toml")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif p == "/slow.toml":
                    server.release.wait()
                elif p == "/trickle.toml":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"# a")
                    self.wfile.flush()
                    server.release.wait()
                else:
                    self.send(404, b"no")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A client that gives up mid-body (the size and deadline tests) breaks the pipe: expected here.
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    """An installation medium that holds an answer file too: a failing named source must not reach it."""
    m = tmp_path / "medium"
    (m / "quantix").mkdir(parents=True)
    (m / "quantix/answer.toml").write_bytes(b"# the medium's answer: must not be used here\n")
    return m


def find(cmdline: str, media: list[Path] | None = None, timeout: float = 5.0) -> tuple[str, bytes] | None:
    return sources.find_answer(cmdline=cmdline, media_dirs=media or [], timeout=timeout)


# ---------------------------------------------------------------------------------------------
# The kernel command line.


def test_kernel_params() -> None:
    assert sources.kernel_params('quiet  qx.answer="http://h/a b.toml" console=ttyS0 x=1 x=2 ro\n') == {
        "qx.answer": "http://h/a b.toml", "console": "ttyS0", "x": "2"}
    assert sources.kernel_params("") == {}


def test_url_with_and_without_pin(server: Server, medium: Path) -> None:
    assert find(f"quiet qx.answer={server.url}/a.toml", [medium]) == (f"{server.url}/a.toml", ANSWER)
    pin = hashlib.sha256(ANSWER).hexdigest().upper()   # either case
    where, data = find(f"qx.answer={server.url}/a.toml qx.answer.sha256={pin} ro", [medium])  # type: ignore[misc]
    assert data == ANSWER and where == f"{server.url}/a.toml (sha256 pinned)"
    # What the installer does next: the description names the source in every error.
    with pytest.raises(answer.ValidationError) as exc:
        answer.parse(data, source=where)
    assert exc.value.errors[-1].field == "install"


def test_exactly_one_mib_is_accepted(server: Server) -> None:
    assert len(find(f"qx.answer={server.url}/limit.toml")[1]) == sources.MAX_BYTES  # type: ignore[index]


def test_redirects_are_followed(server: Server) -> None:
    assert find(f"qx.answer={server.url}/redirect") == (f"{server.url}/redirect", ANSWER)
    assert server.paths == ["/redirect", "/a.toml"]


def test_retries_until_the_server_is_ready(server: Server) -> None:
    assert find(f"qx.answer={server.url}/flaky.toml", timeout=30)[1] == ANSWER  # type: ignore[index]
    assert server.paths == ["/flaky.toml"] * 3


@pytest.mark.parametrize("path, error, text", [
    ("/a.toml qx.answer.sha256=" + "0" * 64, UserError, "has SHA-256 " + hashlib.sha256(ANSWER).hexdigest()),
    ("/a.toml qx.answer.sha256=xyz", UserError, "'xyz' is not a SHA-256 checksum"),
    ("/missing.toml", ExternalError, "answered HTTP 404"),
    ("/big.toml", UserError, "is larger than 1024 KiB"),
    ("/big-stream.toml", UserError, "is larger than 1024 KiB"),
    ("/down.toml", ExternalError, "could not fetch"),
    ("/slow.toml", ExternalError, "did not answer within 1 s"),
    ("/trickle.toml", ExternalError, "within 1 s"),
])
def test_a_named_url_that_fails_is_an_error_not_a_fall_through(server: Server, medium: Path, path: str,
                                                                 error: type, text: str) -> None:
    with pytest.raises(error) as exc:
        find(f"qx.answer={server.url}{path}", [medium], timeout=1)
    assert text in str(exc.value), str(exc.value)
    assert exc.value.hint


def test_no_network_is_an_environment_error(medium: Path) -> None:
    import socket

    with socket.socket() as s:   # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EnvironmentError_) as exc:
        find(f"qx.answer=http://127.0.0.1:{port}/a.toml", [medium], timeout=1)
    assert "could not fetch" in str(exc.value) and "DHCP" in (exc.value.hint or "")


@pytest.mark.parametrize("cmdline, text", [
    ("qx.answer=ftp://x/a.toml", "'ftp://x/a.toml' is not an http or https URL"),
    ("qx.answer=https://", "is not an http or https URL"),
    ("qx.answer=http://[::1/a", "is not an http or https URL"),
    ("qx.answer=", "is not an http or https URL"),
    ("qx.answer.sha256=" + "0" * 64, "qx.answer.sha256 is on the kernel command line but qx.answer is not"),
])
def test_bad_parameters(medium: Path, cmdline: str, text: str) -> None:
    with pytest.raises(UserError) as exc:
        find(cmdline, [medium])
    assert text in str(exc.value)


def test_untrusted_https_certificate(tmp_path: Path, medium: Path) -> None:
    """A real TLS server with a self-signed certificate: refused at once, not retried to the deadline."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    s = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s.httpd.socket = ctx.wrap_socket(s.httpd.socket, server_side=True)
    try:
        with pytest.raises(ExternalError, match="certificate is not trusted"):
            find(f"qx.answer=https://127.0.0.1:{s.httpd.server_address[1]}/a.toml", [medium], timeout=30)
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# The installation medium, and nothing at all.


def test_the_medium_and_nothing(tmp_path: Path) -> None:
    empty, m = tmp_path / "empty", tmp_path / "m"
    empty.mkdir()
    assert find("quiet", [empty]) is None
    (m / "quantix").mkdir(parents=True)
    (m / "quantix/answer.toml").write_bytes(ANSWER)
    assert find("quiet", [empty, m]) == (f"{m}/quantix/answer.toml on the installation medium", ANSWER)
    (m / "quantix/answer.toml").write_bytes(b"#" * (sources.MAX_BYTES + 1))
    with pytest.raises(UserError, match="is larger than 1024 KiB"):
        find("quiet", [m])


def test_media_path_is_where_remaster_puts_it() -> None:
    from qx_install import remaster

    assert sources.MEDIA_ANSWER == remaster.ANSWER_PATH


# ---------------------------------------------------------------------------------------------
# A volume labelled QXANSWER (real loop devices).


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``volume(fs, files)``: a 16 MiB filesystem labelled QXANSWER holding ``files`` on a loop device."""
    if os.geteuid() != 0:
        pytest.fail("QXANSWER volume tests need root (loop devices); deselect them with -m 'not root'")
    attached: list[str] = []

    def make(fs: str, files: dict[str, bytes]) -> str:
        img = tmp_path / f"answer{len(attached)}.img"
        with img.open("wb") as f:
            f.truncate(16 * MiB)
        src = tmp_path / f"src{len(attached)}"
        src.mkdir()
        for name, data in files.items():
            (src / name).write_bytes(data)
        if fs == "vfat":
            subprocess.run(["mkfs.vfat", "-n", sources.LABEL, str(img)], check=True, capture_output=True)
            for name in files:
                subprocess.run(["mcopy", "-i", str(img), str(src / name), f"::/{name}"], check=True,
                               env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        else:
            subprocess.run(["mkfs.ext4", "-q", "-L", sources.LABEL, "-d", str(src), str(img)], check=True)
        dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                             text=True).stdout.strip()
        attached.append(dev)
        return dev

    try:
        yield make
    finally:
        for dev in attached:
            subprocess.run(["losetup", "-d", dev], check=False)


def mounts_of_ours() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "qx-disk-" in line or "qx-answer-" in line]


@pytest.mark.root
@pytest.mark.parametrize("fs", ["vfat", "ext4"])
def test_a_volume_labelled_qxanswer(volume: Callable[..., str], medium: Path, fs: str) -> None:
    """vfat is read with mtools (this machine's kernel has no vfat driver), ext4 mounted read-only."""
    dev = volume(fs, {"answer.toml": ANSWER})
    assert find("quiet", [medium]) == (f"volume labelled QXANSWER ({dev})", ANSWER)
    assert mounts_of_ours() == []


@pytest.mark.root
@pytest.mark.parametrize("fs", ["vfat", "ext4"])
def test_a_qxanswer_volume_without_answer_is_an_error(volume: Callable[..., str], medium: Path, fs: str) -> None:
    dev = volume(fs, {"other.txt": b"x"})
    with pytest.raises(UserError) as exc:
        find("quiet", [medium])
    assert str(exc.value) == f"volume labelled QXANSWER ({dev}) holds no answer.toml"
    assert mounts_of_ours() == []


@pytest.mark.root
def test_a_partition_named_qxanswer(tmp_path: Path, medium: Path) -> None:
    """A GPT partition named QXANSWER whose filesystem has no label (the issue allows either)."""
    if os.geteuid() != 0:
        pytest.fail("needs root (loop devices)")
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nname=QXANSWER\n", text=True, check=True)
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        if not os.path.exists(f"{dev}p1"):   # kernels that do not scan loop devices
            subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
        src = tmp_path / "src"
        src.mkdir()
        (src / "answer.toml").write_bytes(ANSWER)
        subprocess.run(["mkfs.ext4", "-q", "-d", str(src), f"{dev}p1"], check=True)
        assert find("quiet", [medium]) == (f"volume labelled QXANSWER ({dev}p1)", ANSWER)
        assert mounts_of_ours() == []
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.root
def test_an_oversized_answer_on_a_fat_volume(volume: Callable[..., str]) -> None:
    volume("vfat", {"answer.toml": b"#" * (sources.MAX_BYTES + 1)})
    with pytest.raises(UserError, match="is larger than 1024 KiB"):
        find("quiet")


@pytest.mark.root
def test_two_qxanswer_volumes_are_ambiguous(volume: Callable[..., str]) -> None:
    a = volume("vfat", {"answer.toml": ANSWER})
    b = volume("ext4", {"answer.toml": ANSWER})
    with pytest.raises(UserError) as exc:
        find("quiet")
    assert "several volumes are labelled QXANSWER" in str(exc.value) and a in str(exc.value) and b in str(exc.value)


@pytest.mark.root
def test_the_url_comes_before_a_volume(volume: Callable[..., str], server: Server) -> None:
    volume("vfat", {"answer.toml": b"# the volume's"})
    assert find(f"qx.answer={server.url}/a.toml")[1] == ANSWER  # type: ignore[index]


@pytest.mark.root
def test_a_qxanswer_volume_gone_from_its_loop_device_is_not_found_from_blkid_s_cache(tmp_path: Path,
                                                                                     medium: Path) -> None:
    """blkid's cache trusts an entry for 2 s: a QXANSWER volume detached from its loop device, and a blank
    image attached to the same device at once, still showed the old label (two tests on two workers made
    'several volumes are labelled QXANSWER' out of that in a CI run). The lookup probes the devices now."""
    if os.geteuid() != 0:
        pytest.fail("needs root (loop devices)")
    answer, blank = tmp_path / "answer.img", tmp_path / "blank.img"
    for img in (answer, blank):
        with img.open("wb") as f:
            f.truncate(16 * MiB)
    subprocess.run(["mkfs.vfat", "-n", sources.LABEL, str(answer)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(answer)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        subprocess.run(["blkid", dev], check=False, capture_output=True)   # now in blkid's cache
        subprocess.run(["losetup", "-d", dev], check=True)
        subprocess.run(["losetup", dev, str(blank)], check=True)          # the same device, no label
        found = find("quiet", [medium])
        assert found is not None and found[1] == (medium / "quantix/answer.toml").read_bytes(), found
        assert "QXANSWER" not in found[0], found   # the medium's answer: no volume is labelled QXANSWER now
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
