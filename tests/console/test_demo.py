"""``qx-console --demo``: its --help states the demo password; run on a real terminal it writes nothing
outside a temporary directory (every write-like operation of the process is recorded by a Python audit
hook: open for writing, mkdir, rename, remove, chmod, temp files); the live system's banner shows when
the kernel command line has quantix.live=1 (read under --root, so a test gives its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qx_console.app import ConsoleApp
from qx_console.cli import LIVE_BANNER, live_system
from qx_console.memory import DEMO_PASSWORD, MemoryBackend

from .helpers import bad_glyphs, on_screen, until
from .test_app import login
from .test_terminal import F2, Terminal

# Installs the audit hook first, then runs qx-console's real entry point with the given arguments.
WRAPPER = r"""
import os, sys
log_fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # opened before the hook
os.chdir(sys.argv[2])
os.environ["HOME"] = os.environ["TMPDIR"] = sys.argv[2]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.symlink", "os.link", "os.truncate",
               "os.chmod", "os.chown", "os.utime", "tempfile.mkstemp", "tempfile.mkdtemp", "shutil.copyfile",
               "shutil.move", "shutil.rmtree"}

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE):
            return
    elif event in PATH_EVENTS:
        path = args[0]
        if isinstance(path, int):
            return
    else:
        return
    os.write(log_fd, f"{event}\t{os.path.abspath(os.fsdecode(path))}\n".encode())

sys.addaudithook(hook)
open(os.path.join(sys.argv[2], "hook-probe"), "w").close()  # proves the hook records (the test checks it)
from qx_console.cli import main
sys.argv = ["qx-console", *sys.argv[3:]]
main()
"""

QX_CONSOLE = Path(sys.executable).parent / "qx-console"


def test_help_states_the_demo_password() -> None:
    out = subprocess.run([str(QX_CONSOLE), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--demo" in out and f"'{DEMO_PASSWORD}'" in " ".join(out.split())
    assert MemoryBackend().verify_root_password(DEMO_PASSWORD)


def test_live_flag_is_read_from_the_given_root(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=PARTLABEL=root-a quantix.live=1 quiet\n")
    assert live_system(tmp_path)
    (tmp_path / "proc/cmdline").write_text("root=PARTLABEL=root-a quantix.live=10\n")
    assert not live_system(tmp_path)


def test_demo_on_a_terminal_writes_nothing_outside_its_temp_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("quantix.live=1\n")
    log = tmp_path / "writes.log"
    # -B: no bytecode caches (Python's own, not the console's writes)
    term = Terminal([sys.executable, "-B", "-c", WRAPPER, str(log), str(work), "--demo", "--root", str(root),
                     "--tty", "tty1"])
    try:
        term.wait_for(lambda: b"10.0.2.15" in term.out)
        assert b"LIVE SYSTEM" in term.out  # the banner: this root's command line says live
        mark = len(term.out)
        term.write(F2)
        term.wait_for(lambda: b"root password" in term.out[mark:])
        term.write(DEMO_PASSWORD.encode() + b"\r")
        term.wait_for(lambda: b"System Customization" in term.out[mark:])
        term.write(b"\r")  # Configure Management Network (the menu; reads only)
        term.wait_for(lambda: b"Network Adapters" in term.out[mark:])
    finally:
        term.close()
    writes = [line.split("\t") for line in log.read_text().splitlines()]
    assert writes[0] == ["open", str(work / "hook-probe")]
    outside = [(e, p) for e, p in writes
               if not (Path(p).is_relative_to(work) or p.startswith("/dev/"))]
    assert not outside, outside
    # no readiness file for a demo (the default directory, nor anywhere else)
    assert not any(p.endswith(".ready") for _, p in writes)


@pytest.mark.anyio
async def test_live_banner_on_every_screen() -> None:
    app = ConsoleApp(MemoryBackend(), refresh_s=3600, banner=LIVE_BANNER)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15") and on_screen(app, LIVE_BANNER))
        await login(pilot, app)
        await until(pilot, lambda: on_screen(app, f"System Customization  [{LIVE_BANNER}]"))
        assert not bad_glyphs(app)
