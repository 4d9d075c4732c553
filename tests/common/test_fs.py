"""qx_common.fs: the one atomic write. A full filesystem and kill -9 mid-write leave the old file whole."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qx_common.fs import atomic_copy, atomic_write

OLD = b"old content\n"


def test_writes_through_a_symlink_and_sets_the_mode(tmp_path: Path) -> None:
    real = tmp_path / "data" / "shadow"
    real.parent.mkdir()
    real.write_bytes(OLD)
    link = tmp_path / "etc-shadow"
    link.symlink_to(real)
    atomic_write(link, "new\n", mode=0o640)
    assert link.is_symlink() and real.read_text() == "new\n"
    assert real.stat().st_mode & 0o777 == 0o640
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 << 20))
    atomic_copy(src, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()
    assert not [p for p in tmp_path.rglob(".*.tmp")]


@pytest.mark.root
def test_a_full_filesystem_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        target = mnt / "state.json"
        target.write_bytes(OLD)
        with pytest.raises(OSError):
            atomic_write(target, b"x" * (2 << 20))
        assert target.read_bytes() == OLD
        assert sorted(p.name for p in mnt.iterdir()) == ["state.json"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


_WRITER = """
import sys
from pathlib import Path
from qx_common.fs import atomic_write
target = Path(sys.argv[1])
big = bytes(range(256)) * (16 * 4096)   # 16 MiB, the same bytes every time
print("ready", flush=True)
while True:
    atomic_write(target, big)
"""


def test_kill_9_at_any_moment_leaves_old_or_new_never_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(OLD)
    new = bytes(range(256)) * (16 * 4096)
    allowed = {hashlib.sha256(OLD).hexdigest(), hashlib.sha256(new).hexdigest()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.0, 0.01, 0.03, 0.07, 0.15):   # different points of the write/fsync/rename cycle
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)  # where in the cycle the kill lands: any point must be safe
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert hashlib.sha256(target.read_bytes()).hexdigest() in allowed

