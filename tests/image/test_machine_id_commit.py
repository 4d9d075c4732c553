"""The image's machine-id commit (image/extra/usr/lib/quantix/machine-id-commit), with real mounts.

On a first boot PID1 leaves "uninitialized" in the data partition's machine-id file and bind-mounts a
transient id over it. The script must write that id into the file underneath and drop the bind
mount, so the next boot reads the same id. (The e2e OTA test checks the same across real reboots.)
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image/extra/usr/lib/quantix/machine-id-commit"
pytestmark = pytest.mark.root


def _is_mountpoint(p: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(p)]).returncode == 0


def _run(f: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT)], env={**os.environ, "QX_MACHINE_ID_FILE": str(f)},
                          capture_output=True, text=True, timeout=30)


def test_transient_id_is_written_underneath_and_the_bind_mount_dropped(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (bind mounts)")
    f = tmp_path / "machine-id"
    f.write_text("uninitialized\n")
    transient = tmp_path / "run-machine-id"
    new_id = uuid.uuid4().hex
    transient.write_text(new_id + "\n")
    subprocess.run(["mount", "--bind", str(transient), str(f)], check=True)
    try:
        assert f.read_text().strip() == new_id and _is_mountpoint(f)
        r = _run(f)
        assert r.returncode == 0, r.stderr
    finally:
        if _is_mountpoint(f):
            subprocess.run(["umount", "-l", str(f)], check=False)
    assert not _is_mountpoint(f)
    assert f.read_text() == new_id + "\n"  # the file itself, as the next boot reads it


def test_nothing_mounted_is_nothing_to_do(tmp_path: Path) -> None:
    f = tmp_path / "machine-id"
    f.write_text("0123456789abcdef0123456789abcdef\n")
    r = _run(f)
    assert r.returncode == 0 and f.read_text() == "0123456789abcdef0123456789abcdef\n"


def test_a_mounted_file_without_an_id_is_refused_and_left_alone(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (bind mounts)")
    f = tmp_path / "machine-id"
    f.write_text("uninitialized\n")
    bad = tmp_path / "bad"
    bad.write_text("uninitialized\n")
    subprocess.run(["mount", "--bind", str(bad), str(f)], check=True)
    try:
        r = _run(f)
        assert r.returncode == 1 and "not a machine id" in r.stderr
        assert _is_mountpoint(f)
    finally:
        subprocess.run(["umount", "-l", str(f)], check=False)
    assert f.read_text() == "uninitialized\n"
