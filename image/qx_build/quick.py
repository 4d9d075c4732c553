"""A rebuild after a change to our Python code only: the root without a mkosi run.

A full build leaves in mkosi's output directory (``build/.work/disk``, the *base*) what a rebuild needs:

- ``quantix-tree/`` — the image's tree as the finalize script exported it (``image/scripts/finalize``),
  which the root slot is made of (and the live system: :mod:`qx_build.live`);
- mkosi's disk image, before the build seals it, and its UKI with the root-hash placeholder, the kernel,
  the factory ``/var`` archive, systemd-boot and the package manifest;
- :data:`RECORD` — what that tree was made from: :func:`fingerprint` of every input but our own wheel,
  and the sha256 of the wheel installed in it.

When the current inputs have the recorded fingerprint, only our wheel can differ. :func:`rebuild_root`
then replaces it in the tree with ``image/scripts/install-quantix`` in a chroot (the very script the full
build's postinst runs), sets every mtime to SOURCE_DATE_EPOCH as finalize does, and makes the root's erofs
with the arguments systemd-repart gives mkfs.erofs for ``image/repart/10-root-a.conf`` (its UUID,
``/var``, ``/efi`` and ``/boot`` left empty). :func:`disk_from_base` puts that root into a copy of the
base disk. The build goes on from there as after mkosi (sealing, ESP, payload, ISO). For the same sources
the result is byte-for-byte the full build's (tests/e2e/test_quick.py).

What is a Python-only change is decided by content, never by timestamps: any change to mkosi.conf,
``image/`` (but the build tool ``image/qx_build`` and documentation), the locked dependencies' wheels, the
trust anchor, the Secure Boot pair, the profile, the version, mkosi or its package cache makes the next
build a full one; ``qx-build image --full`` (``make image FULL=1``) forces one.

Crash safety: the record is removed before the tree is touched and written again (atomically) only once
the tree is whole; a build killed in between finds no record and runs mkosi, which makes a new base.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_build import gpt, live
from qx_build.hashing import sha256_file

RECORD = "quick-base.json"
_FORMAT = 1
_INSTALLER = "image/scripts/install-quantix"
_VENV = "/usr/lib/quantix/venv"
_ROOT_LABEL = "root-a"
# image/repart/10-root-a.conf: ExcludeFiles=/var/ /efi/ /boot/ (the directories stay, empty).
_ROOT_EXCLUDE_REGEX = "^(var|efi|boot)/.+"
# Not inputs of the mkosi run: the build tool itself (its steps after mkosi run again on every build)
# and text nobody's build reads.
_NOT_INPUT_DIR = "image/qx_build"
_NOT_INPUTS = ("image/README.md", "image/size-record.json")
_EROFS_UUID_OFFSET = 1024 + 48  # superblock at 1024, uuid[16] at +48 (linux fs/erofs/erofs_fs.h)


def _entries(root: Path, repo: Path) -> Iterable[tuple[str, Path]]:
    """Every directory, file and link under ``root`` (links to directories too, not followed), sorted."""
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            if name == "__pycache__":
                continue
            path = Path(dirpath) / name
            yield path.relative_to(repo).as_posix(), path
        dirs[:] = [d for d in dirs if d != "__pycache__"]


def fingerprint(*, repo: Path, wheel_dir: Path, trust_dir: Path, mkosi_args: list[str], version: str,
                epoch: str, mkosi_version: str, mkosi_cache: Path, signing_files: list[Path]) -> str:
    """sha256 over everything the mkosi run's tree depends on, except our own wheel."""
    h = hashlib.sha256()

    def add(label: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    # mkosi.conf and whatever else mkosi would read beside it (mkosi.local.conf, mkosi.conf.d/, ...).
    mkosi_files = sorted(repo.glob("mkosi*"))
    entries = [e for top in mkosi_files for e in ([(top.name, top)] + list(_entries(top, repo)) if top.is_dir()
                                                   else [(top.name, top)])]
    for rel, path in [*entries, *_entries(repo / "image", repo)]:
        if rel in _NOT_INPUTS or rel == _NOT_INPUT_DIR or rel.startswith(_NOT_INPUT_DIR + "/"):
            continue
        st = path.lstat()
        if path.is_symlink():
            add(f"link {rel}", os.readlink(path))
        elif path.is_dir():
            add(f"dir {rel} {st.st_mode:o}", b"")
        else:
            add(f"file {rel} {st.st_mode:o}", path.read_bytes())
    for path in sorted(trust_dir.glob("*")) if trust_dir.is_dir() else []:
        add(f"trust {path.name}", path.read_bytes())
    for path in sorted(wheel_dir.glob("*.whl")):
        if not path.name.startswith("quantix_os-"):
            add(f"wheel {path.name}", sha256_file(path))
    for path in signing_files:
        add(f"signing {path.name}", path.read_bytes())
    add("mkosi args", "\0".join(mkosi_args))
    add("version", version)
    add("epoch", epoch)
    add("mkosi", mkosi_version)
    # The incremental cache: a rebuilt cache may hold other package versions, so its identity counts.
    for entry in sorted(mkosi_cache.glob("*")) if mkosi_cache.is_dir() else []:
        st = entry.stat()
        add(f"cache {entry.name}", f"{st.st_ino} {st.st_mtime_ns}")
    return h.hexdigest()


def _record_path(base: Path) -> Path:
    return base / RECORD


def invalidate(base: Path) -> None:
    """Forget the base (before mkosi rewrites it, or before its tree is changed)."""
    _record_path(base).unlink(missing_ok=True)


def record(base: Path, *, inputs: str, wheel: Path) -> None:
    """Note that ``base`` holds a whole tree made from ``inputs`` with ``wheel`` installed."""
    data = {"format": _FORMAT, "inputs": inputs, "wheel_sha256": sha256_file(wheel)}
    tmp = _record_path(base).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, _record_path(base))


def base_files(base: Path, version: str) -> list[Path]:
    """What a rebuild takes from the base besides its tree."""
    stem = f"quantix-os_{version}"
    return [base / f"{stem}.raw", base / f"{stem}.efi", base / f"{stem}.vmlinuz", base / f"{stem}.manifest",
            base / "quantix-factory-var.tar", base / "quantix-systemd-bootx64.efi"]


def usable(base: Path, *, inputs: str, version: str) -> str | None:
    """Why ``base`` cannot serve a rebuild for ``inputs`` (None: it can)."""
    try:
        data = json.loads(_record_path(base).read_text())
    except FileNotFoundError:
        return "no earlier build to start from"
    except (OSError, ValueError) as e:
        return f"{_record_path(base)} is unreadable ({e})"
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return f"{_record_path(base)} is from another version of qx-build"
    if data.get("inputs") != inputs:
        return "an input besides our Python code changed (mkosi.conf, image/, the lock, keys, profile or mkosi)"
    missing = [p.name for p in [base / live.TREE_DIR, *base_files(base, version)] if not p.exists()]
    if missing:
        return f"the earlier build's {', '.join(missing)} are gone"
    return None


def _set_mtimes(tree: Path, epoch: int) -> None:
    """Every entry's atime and mtime to ``epoch`` (finalize's ``touch --no-dereference``)."""
    for dirpath, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def erofs_uuid(fs: Path, offset: int = 0) -> str:
    """The UUID in the erofs superblock of ``fs`` (at byte ``offset`` of the file), as mkfs.erofs -U takes it."""
    with fs.open("rb") as f:
        f.seek(offset + _EROFS_UUID_OFFSET)
        raw = f.read(16)
    if len(raw) != 16:
        raise ExternalError(f"{fs}: no erofs superblock at byte {offset}")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rebuild_root(base: Path, *, wheel: Path, inputs: str, out: Path, version: str, epoch: int,
                 repo: Path) -> Path:
    """Install ``wheel`` in the base's tree and make the root's erofs at ``out``; returns ``out``."""
    tree = base / live.TREE_DIR
    log.step(f"quick: {wheel.name} into the earlier build's tree (no mkosi run: only our Python code changed)")
    invalidate(base)
    staging = tree / "tmp" / "qx-build-quick"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(repo / _INSTALLER, staging / "install-quantix")
        shutil.copy2(wheel, staging / wheel.name)
        inside = Path("/tmp/qx-build-quick")
        r.run([r.require("chroot"), tree, f"{_VENV}/bin/python", "-B", inside / "install-quantix", _VENV, inside / wheel.name,
               "/usr/bin"], env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _set_mtimes(tree, epoch)
    record(base, inputs=inputs, wheel=wheel)

    log.step("quick: root filesystem (erofs, as systemd-repart makes it)")
    disk = base / f"quantix-os_{version}.raw"
    part = gpt.find(gpt.read_table(disk), _ROOT_LABEL)
    out.unlink(missing_ok=True)
    r.run(["mkfs.erofs", "--quiet", "-U", erofs_uuid(disk, part.start), f"--exclude-regex={_ROOT_EXCLUDE_REGEX}",
           out, tree], env={"SOURCE_DATE_EPOCH": str(epoch)})
    if out.stat().st_size > part.size:
        raise ExternalError(f"the root filesystem ({out.stat().st_size} bytes) outgrew {_ROOT_LABEL} ({part.size})",
                            hint="grow the slot in image/repart (a layout change: docs/update-format.md)")
    return out


def disk_from_base(base: Path, *, version: str, root: Path, out: Path) -> None:
    """A copy of the base's disk image with ``root`` (an erofs image) in its root-a partition, the rest of
    the partition zero as in a disk systemd-repart makes."""
    src = base / f"quantix-os_{version}.raw"
    out.unlink(missing_ok=True)
    r.run(["cp", "--sparse=auto", "--reflink=auto", src, out])  # coreutils copies only the data extents
    part = gpt.find(gpt.read_table(out), _ROOT_LABEL)
    size = root.stat().st_size
    if size > part.size:
        out.unlink()
        raise ExternalError(f"the root filesystem {root} ({size} bytes) does not fit {_ROOT_LABEL} ({part.size} bytes)",
                            hint="grow the slot in image/repart (a layout change: docs/update-format.md)")
    with root.open("rb") as fs, out.open("r+b") as disk:
        disk.seek(part.start)
        shutil.copyfileobj(fs, disk, 4 << 20)
    if size < part.size:
        r.run(["fallocate", "--punch-hole", "--offset", str(part.start + size), "--length", str(part.size - size),
               out])
