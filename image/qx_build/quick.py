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

A full build records its output as a base only through :func:`adopt`: the quick path, given the wheel
mkosi's postinst installed, must give mkosi's root byte for byte, or quick rebuilds stay off.

Crash safety: the wheel is checked first (``install-quantix --check``, which leaves the tree as it was);
then the record is removed before the tree changes and written again (atomically) only once the root is
made; a build killed in between finds no record and runs mkosi, which makes a new base.
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
from qx_build import erofs, gpt, live
from qx_build.hashing import sha256_file

RECORD = "quick-base.json"
KEPT_WHEEL = "quick-base.whl"  # a copy of the wheel installed in the tree (what a rebuild replaces)
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
            path = Path(dirpath) / name
            yield path.relative_to(repo).as_posix(), path


# The build host's tools mkosi and this module run (there is no mkosi ToolsTree): an upgrade can change what a
# full build makes (systemd-repart, ukify, hwdb, depmod, the initrd's compressors), so their versions count.
HOST_PACKAGES = ("mkosi", "systemd", "systemd-repart", "systemd-boot-efi", "systemd-ukify", "udev", "erofs-utils",
                 "kmod", "dpkg", "apt", "sbsigntool", "dosfstools", "mtools", "cpio", "xz-utils", "zstd",
                 "python3-pefile", "util-linux", "coreutils", "bubblewrap")


def host_tools() -> str:
    """``package version`` lines of :data:`HOST_PACKAGES` as dpkg knows them (absent ones are left out)."""
    res = r.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n", *HOST_PACKAGES], check=False)
    return "".join(sorted(res.stdout.splitlines(keepends=True)))


def sources(*, repo: Path, wheel_dir: Path, trust_dir: Path, mkosi_args: list[str], version: str, epoch: str,
            mkosi_version: str, signing_files: list[Path], tools: str | None = None) -> str:
    """sha256 over everything the mkosi run's tree depends on but our own wheel and mkosi's cache.
    ``mkosi_args``: mkosi's whole command line and environment (:func:`qx_build.mkosi.command`);
    ``tools``: :func:`host_tools` (asked when not given)."""
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
    add("host tools", host_tools() if tools is None else tools)
    return h.hexdigest()


def inputs(sources_fingerprint: str, mkosi_cache: Path) -> str:
    """The sources with the identity of mkosi's incremental cache: a rebuilt cache may hold other package
    versions. Taken after mkosi ran (a cold run makes the cache), with the sources taken before it."""
    h = hashlib.sha256(sources_fingerprint.encode())
    for entry in sorted(mkosi_cache.glob("*")) if mkosi_cache.is_dir() else []:
        st = entry.stat()
        h.update(f"\0cache {entry.name} {st.st_ino} {st.st_mtime_ns}".encode())
    return h.hexdigest()


def fingerprint(*, mkosi_cache: Path, **kw: object) -> str:
    """:func:`inputs` of :func:`sources` (``kw``) and ``mkosi_cache``: what :data:`RECORD` holds."""
    return inputs(sources(**kw), mkosi_cache)  # type: ignore[arg-type]


def _record_path(base: Path) -> Path:
    return base / RECORD


def invalidate(base: Path) -> None:
    """Forget the base (before mkosi rewrites it, or before its tree is changed)."""
    _record_path(base).unlink(missing_ok=True)


def _state(base: Path, version: str) -> dict[str, object]:
    """What would show a hand edit of the base since it was recorded: the tree's entry count and newest
    ctime (utime cannot set a ctime back), and the base files' identity, size and mtime."""
    count, newest = 0, 0
    for dirpath, dirs, files in os.walk(base / live.TREE_DIR):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(dirpath, name))
            count += 1
            newest = max(newest, st.st_ctime_ns)
    files = {}
    for path in base_files(base, version):
        st = path.stat()
        files[path.name] = [st.st_ino, st.st_size, st.st_mtime_ns]
    return {"tree_entries": count, "tree_newest_ctime_ns": newest, "files": files}


def record(base: Path, *, inputs: str, wheel: Path, version: str) -> None:
    """Note that ``base`` holds a whole tree made from ``inputs`` with ``wheel`` installed (kept beside it)."""
    kept = base / KEPT_WHEEL
    if wheel.resolve() != kept.resolve():
        shutil.copyfile(wheel, kept.with_suffix(".tmp"))
        os.replace(kept.with_suffix(".tmp"), kept)
    data = {"format": _FORMAT, "inputs": inputs, "wheel_sha256": sha256_file(kept), "version": version,
            "state": _state(base, version)}
    tmp = _record_path(base).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, _record_path(base))


def _restamp(base: Path, version: str) -> None:
    """Take the base's current state into an existing record (after a change of our own that kept the tree)."""
    try:
        data = json.loads(_record_path(base).read_text())
    except (OSError, ValueError):
        return
    data["state"] = _state(base, version)
    tmp = _record_path(base).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, _record_path(base))


def base_files(base: Path, version: str) -> list[Path]:
    """What a rebuild takes from the base besides its tree (and the wheel installed in that tree)."""
    stem = f"quantix-os_{version}"
    return [base / f"{stem}.raw", base / f"{stem}.root.raw", base / f"{stem}.efi", base / f"{stem}.vmlinuz",
            base / f"{stem}.manifest", base / "quantix-factory-var.tar", base / "quantix-systemd-bootx64.efi",
            base / KEPT_WHEEL]


def usable(base: Path, *, inputs: str, version: str) -> str | None:
    """Why ``base`` cannot serve a rebuild for ``inputs`` (None: it can)."""
    try:
        data = json.loads(_record_path(base).read_text())
    except FileNotFoundError:
        return "no finished earlier build to start from (the first build, or the last one did not finish)"
    except (OSError, ValueError) as e:
        return f"{_record_path(base)} is unreadable ({e})"
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return f"{_record_path(base)} is from another version of qx-build"
    if data.get("inputs") != inputs:
        return "an input besides our Python code changed (mkosi.conf, image/, the lock, keys, profile, mkosi or host tools)"
    missing = [p.name for p in [base / live.TREE_DIR, *base_files(base, version)] if not p.exists()]
    if missing:
        return f"the earlier build's {', '.join(missing)} are gone"
    if data.get("version") != version or data.get("state") != _state(base, version):
        return f"the earlier build's files in {base} were changed since it recorded them"
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


def _install(base: Path, wheel: Path, *, epoch: int, repo: Path, version: str) -> None:
    """``wheel`` into the base's tree by install-quantix in a chroot, then every mtime to ``epoch``."""
    tree = base / live.TREE_DIR
    for d in ("var", "efi", "boot", "tmp"):  # what _ROOT_EXCLUDE_REGEX and the staging below assume
        if (tree / d).is_symlink() or not (tree / d).is_dir():
            raise ExternalError(f"{tree}/{d} is not a directory as mkosi left it",
                                hint="make image FULL=1 (a full build makes a new base)")
    for check in (True, False):
        if not check:
            invalidate(base)  # from here on the tree is changing
        staging = tree / "tmp" / "qx-build-quick"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            shutil.copy2(repo / _INSTALLER, staging / "install-quantix")
            shutil.copy2(wheel, staging / wheel.name)
            inside = Path("/tmp/qx-build-quick")
            args = ["--check", inside / wheel.name] if check else [_VENV, inside / wheel.name, "/usr/bin"]
            try:
                r.run([r.require("chroot"), tree, f"{_VENV}/bin/python", "-B", inside / "install-quantix", *args],
                      env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"})
            except ExternalError as e:
                if check:  # nothing of the tree changed but /tmp's times (the staging): still the recorded base
                    shutil.rmtree(staging, ignore_errors=True)
                    _restamp(base, version)
                raise ExternalError(f"{wheel.name} cannot go into the earlier build's tree: {e.message}",
                                    hint="fix what it names and build again" + (
                                        "" if check else " (that build runs mkosi: this tree is no longer trusted)")
                                    ) from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _set_mtimes(tree, epoch)


def _make_root(base: Path, *, version: str, epoch: int, out: Path) -> Path:
    """The root's erofs from the base's tree, as systemd-repart makes it for image/repart/10-root-a.conf."""
    disk = base / f"quantix-os_{version}.raw"
    part = gpt.find(gpt.read_table(disk), _ROOT_LABEL)
    out.unlink(missing_ok=True)
    r.run([r.require("mkfs.erofs"), "--quiet", "-U", erofs_uuid(disk, part.start),
           f"--exclude-regex={_ROOT_EXCLUDE_REGEX}", out, base / live.TREE_DIR], env={"SOURCE_DATE_EPOCH": str(epoch)})
    if out.stat().st_size > part.size:
        raise ExternalError(f"the root filesystem ({out.stat().st_size} bytes) outgrew {_ROOT_LABEL} ({part.size})",
                            hint="grow the slot in image/repart (a layout change: docs/update-format.md)")
    return out


def rebuild_root(base: Path, *, wheel: Path, inputs: str, out: Path, version: str, epoch: int,
                 repo: Path) -> Path:
    """Install ``wheel`` in the base's tree and make the root's erofs at ``out``; returns ``out``."""
    log.step(f"quick: {wheel.name} into the earlier build's tree (no mkosi run: only our Python code changed)")
    # Checks the wheel first (the base stays usable if it is refused), then forgets the base, then installs.
    _install(base, wheel, epoch=epoch, repo=repo, version=version)
    log.step("quick: root filesystem (erofs, as systemd-repart makes it)")
    root = _make_root(base, version=version, epoch=epoch, out=out)
    record(base, inputs=inputs, wheel=wheel, version=version)
    return root


def adopt(base: Path, *, wheel: Path, inputs: str, version: str, epoch: int, repo: Path, out: Path) -> str | None:
    """After a full build: record ``base`` for quick rebuilds only if the quick path, given the very wheel
    mkosi's postinst installed, makes mkosi's root byte for byte (so any difference in how repart, the
    postinst or this module build it shows up here, once per full build). Returns why not (None: recorded)."""
    log.step("quick: checking that a rebuild from this build's tree gives mkosi's root")
    invalidate(base)
    _install(base, wheel, epoch=epoch, repo=repo, version=version)
    root = _make_root(base, version=version, epoch=epoch, out=out)
    mkosi_root = base / f"quantix-os_{version}.root.raw"
    size = erofs.filesystem_size(mkosi_root)
    same = root.stat().st_size == size and sha256_file(root) == sha256_file(mkosi_root, limit=size)
    root.unlink()
    if not same:
        return ("a rebuild from the tree does not give mkosi's root byte for byte (did image/repart/10-root-a.conf "
                "or mkosi's way of making the root change?): quick rebuilds stay off; report it")
    record(base, inputs=inputs, wheel=wheel, version=version)
    return None


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
