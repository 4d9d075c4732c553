"""Every operator mistake ends in a one-line error naming the flag or file, with a hint — never
"internal error". Each case runs the real command (``python -m``) as an operator would."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from qx_update_server.repository import Repository

from .conftest import ROOT, free_port


def run(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", f"qx_update_server.{module}", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})


def assert_clear(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "error:" in p.stderr and "hint:" in p.stderr, p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert_clear(run("cli", "serve", "--data-dir", str(f), "--listen", f"127.0.0.1:{free_port()}"), 2,
                 "--data-dir", "is a file")
    assert_clear(run("cli", "token", "create", "--data-dir", str(f), "--name", "a", "--scopes", "read"), 2,
                 "is a file")


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run("cli", "serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}")
    assert_clear(p, 2, f"--listen 127.0.0.1:{port}: the port is already in use", "ss -ltnp")


@pytest.mark.parametrize("args,needle", [
    (["--refresh-interval", "0"], "--refresh-interval: '0' must be a number from 1 to 21600"),
    (["--refresh-interval", "soon"], "--refresh-interval: 'soon'"),
    (["--max-upload", "-5"], "--max-upload: '-5' must be a whole number"),
    (["--max-upload", "1.5"], "--max-upload: '1.5' must be a whole number"),
    (["--max-connections", "3"], "--max-connections"),
    (["--header-timeout", "0"], "--header-timeout"),
    (["--tls-cert", "/nonexistent.pem"], "give both or neither"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "--tls-cert /nonexistent.pem: no such file"),
    (["--listen", "localhost"], "--listen: 'localhost' is not ADDRESS:PORT"),
])
def test_serve_flag_values(tmp_path, args, needle):
    extra = [] if "--listen" in args else ["--listen", f"127.0.0.1:{free_port()}"]
    p = run("cli", "serve", "--data-dir", str(tmp_path / "d"), *extra, *args)
    assert p.returncode == 2 and needle in p.stderr and "internal error" not in p.stderr, p.stderr


def test_corrupt_metadata_at_start(tmp_path):
    data = tmp_path / "d"
    Repository(data).init()
    (data / "repository" / "metadata" / "timestamp.json").write_text("{not json")
    p = run("cli", "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}")
    assert_clear(p, 3, "timestamp.json: not valid TUF metadata", "restore")


def test_release_cli_mistakes(tmp_path, make_release):
    srv = ["--server", f"http://127.0.0.1:{free_port()}"]
    env = {"QX_RELEASE_TOKEN": "qxr_x"}
    assert_clear(run("release_cli", "--server", "updates:8400", "list", env=env), 2, "--server", "http://")
    assert_clear(run("release_cli", "--server", "ftp://x", "list", env=env), 2, "--server")
    assert_clear(run("release_cli", *srv, "rollout", "0.2.0", "--percent", "150", env=env), 2,
                 "--percent: 150 is not a percentage")
    build = make_release("0.2.0")
    assert_clear(run("release_cli", *srv, "publish", "--notes-file", str(tmp_path / "missing.md"), str(build),
                     env=env), 2, "--notes-file", "missing.md")
    assert_clear(run("release_cli", *srv, "publish", "--notes", "x" * 5000, str(build), env=env), 2,
                 "--notes: 5000 bytes is over the limit of 4096")
    assert_clear(run("release_cli", *srv, "publish", str(tmp_path / "nope"), env=env), 2, "no such file")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    assert_clear(run("release_cli", *srv, "export", str(blocker / "usb"), env=env), 3, "export: cannot write")
    assert_clear(run("release_cli", *srv, "export", str(blocker), env=env), 2, "is a file")
    assert_clear(run("release_cli", *srv, "--token-file", str(tmp_path / "none"), "list"), 2, "--token-file")
    assert_clear(run("release_cli", *srv, "list"), 2, "--token: not given")
