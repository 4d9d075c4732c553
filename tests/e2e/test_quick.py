"""A rebuild after a change to our Python code only (qx_build.quick), on a copy of the real build's base.

The promise: the same wheel gives the full build's root and disk byte for byte; a changed wheel changes our
code and nothing else; going back gives the full build's bytes again; a failed rebuild leaves no record, so
the next build runs mkosi. The rebuild really runs: install-quantix in a chroot of the kept tree, mkfs.erofs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from qx_build import erofs, gpt, quick
from qx_build.hashing import sha256_file
from qx_build.paths import REPO, Release, read_mkosi_setting
from qx_common.errors import ExternalError

BASE = REPO / "build" / ".work" / "disk"
SITE = "usr/lib/quantix/venv/lib/python3.13/site-packages"
PROBE = "qx_common/_quick_probe.py"


def _record(base: Path) -> dict[str, str]:
    return json.loads((base / quick.RECORD).read_text())


def _installed_wheel(base: Path, dest: Path) -> Path:
    """A copy of the wheel installed in the base's tree (the one the release was built with)."""
    wheel = dest / "quantix_os-installed-py3-none-any.whl"
    shutil.copyfile(base / quick.KEPT_WHEEL, wheel)
    assert sha256_file(wheel) == _record(base)["wheel_sha256"]
    return wheel


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, release: Release) -> Path:
    """A private copy of mkosi's output directory: a rebuild changes the tree in place. The copy has new
    ctimes, which the record's state notices (a hand edit), so it is recorded again, as the build did."""
    tmp = tmp_path_factory.mktemp("quick")
    dst = tmp / "base"
    dst.mkdir()
    assert quick.usable(BASE, inputs=_record(BASE)["inputs"], version=release.version) is None
    for src in [BASE / quick.RECORD, BASE / "quantix-tree", *quick.base_files(BASE, release.version)]:
        subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True)
    quick.record(dst, inputs=_record(dst)["inputs"], wheel=dst / quick.KEPT_WHEEL, version=release.version)
    assert quick.usable(dst, inputs=_record(dst)["inputs"], version=release.version) is None
    return dst


def _extract(fs: Path, dest: Path) -> dict[str, str]:
    """path -> content hash (or link target) of every file in an erofs image."""
    subprocess.run(["fsck.erofs", f"--extract={dest}", str(fs)], check=True, capture_output=True)
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(dest):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(dest).as_posix()
            out[rel] = "-> " + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    shutil.rmtree(dest)
    return out


def _rebuild(base: Path, wheel: Path, out: Path, release: Release) -> Path:
    return quick.rebuild_root(base, wheel=wheel, inputs=_record(base)["inputs"], out=out, version=release.version,
                              epoch=int(read_mkosi_setting("SourceDateEpoch")), repo=REPO)


def _probe_wheel(wheel: Path, dest: Path) -> Path:
    """The same wheel with one module more: what a one-file change to our code makes."""
    probe = dest / "probe" / wheel.name
    probe.parent.mkdir()
    shutil.copy(wheel, probe)
    with zipfile.ZipFile(probe, "a") as zf:
        zf.writestr(PROBE, "PROBE = 'quick'\n")
    return probe


def test_the_same_wheel_gives_the_full_builds_root_and_disk(base: Path, release: Release, tmp_path: Path) -> None:
    wheel = _installed_wheel(base, tmp_path)
    root = _rebuild(base, wheel, tmp_path / "root.erofs", release)
    manifest = json.loads(release.manifest.read_text())["artifacts"]["root"]
    assert erofs.filesystem_size(root) == manifest["uncompressed_size"]
    assert sha256_file(root) == manifest["uncompressed_sha256"]  # the slot bytes hosts verify and boot

    # The disk: mkosi's, with this root in root-a and the rest of root-a zero, as systemd-repart leaves it.
    disk = tmp_path / "disk.raw"
    quick.disk_from_base(base, version=release.version, root=root, out=disk)
    mkosi_disk = BASE / f"quantix-os_{release.version}.raw"
    table = gpt.read_table(disk)
    assert [(p.name, p.start, p.size, p.uuid) for p in table] == \
        [(p.name, p.start, p.size, p.uuid) for p in gpt.read_table(mkosi_disk)]
    first = table[0].start
    assert sha256_file(disk, limit=first) == sha256_file(mkosi_disk, limit=first)  # protective MBR and GPT
    for p in table:
        if p.name != "root-a":
            assert sha256_file(disk, offset=p.start, limit=p.size) == \
                sha256_file(mkosi_disk, offset=p.start, limit=p.size), p.name
            continue
        size = root.stat().st_size
        assert sha256_file(disk, offset=p.start, limit=size) == manifest["uncompressed_sha256"]
        assert sha256_file(disk, offset=p.start + size, limit=p.size - size) == \
            hashlib.sha256(bytes(p.size - size)).hexdigest()
    assert quick.usable(base, inputs=_record(base)["inputs"], version=release.version) is None


def test_a_changed_wheel_changes_only_our_code_and_going_back_restores_the_bytes(
        base: Path, release: Release, tmp_path: Path) -> None:
    wheel = _installed_wheel(base, tmp_path)
    before = _extract(_rebuild(base, wheel, tmp_path / "same.erofs", release), tmp_path / "before")

    probe = _probe_wheel(wheel, tmp_path)
    changed = _rebuild(base, probe, tmp_path / "changed.erofs", release)
    after = _extract(changed, tmp_path / "after")
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    record = f"{SITE}/quantix_os-{release.version}.dist-info/RECORD"
    assert differ == sorted([f"{SITE}/{PROBE}", f"{SITE}/qx_common/__pycache__/_quick_probe.cpython-313.pyc", record])
    assert _record(base)["wheel_sha256"] == sha256_file(probe)

    back = _rebuild(base, wheel, tmp_path / "back.erofs", release)
    assert sha256_file(back) == json.loads(release.manifest.read_text())["artifacts"]["root"]["uncompressed_sha256"]


@pytest.mark.parametrize("defect", ["a .data directory", "a syntax error"])
def test_a_wheel_it_refuses_leaves_the_base_as_it_was(base: Path, release: Release, tmp_path: Path,
                                                       defect: str) -> None:
    """A typo in our code is named with its file and line, and the next build, once it is fixed, is still a
    quick one: the wheel is checked before the tree is touched."""
    wheel = _installed_wheel(base, tmp_path)
    inputs = _record(base)["inputs"]
    bad = tmp_path / "bad" / wheel.name
    bad.parent.mkdir()
    shutil.copy(wheel, bad)
    with zipfile.ZipFile(bad, "a") as zf:
        if defect == "a .data directory":
            zf.writestr(f"quantix_os-{release.version}.data/scripts/x", "#!/bin/sh\n")
        else:
            zf.writestr("qx_common/_typo.py", "def broken(:\n    pass\n")
    with pytest.raises(ExternalError) as e:
        _rebuild(base, bad, tmp_path / "bad.erofs", release)
    assert (".data" if defect == "a .data directory" else "qx_common/_typo.py, line 1") in e.value.message
    assert quick.usable(base, inputs=inputs, version=release.version) is None
    assert not (base / "quantix-tree" / "tmp" / "qx-build-quick").exists()


def test_adopt_records_a_base_only_when_a_rebuild_gives_mkosis_root(base: Path, release: Release,
                                                                    tmp_path: Path) -> None:
    """What every full build checks before it records its output as the next quick build's base: here
    against a root that mkosi did not make from this tree (one file more in the tree)."""
    wheel = _installed_wheel(base, tmp_path)
    inputs = _record(base)["inputs"]
    epoch = int(read_mkosi_setting("SourceDateEpoch"))
    extra = base / "quantix-tree" / "usr" / "share" / "qx-not-from-mkosi"
    extra.write_text("a file mkosi never put there\n")
    why = quick.adopt(base, wheel=wheel, inputs=inputs, version=release.version, epoch=epoch, repo=REPO,
                      out=tmp_path / "check.erofs")
    assert why is not None and "mkosi's root" in why
    assert quick.usable(base, inputs=inputs, version=release.version) is not None
