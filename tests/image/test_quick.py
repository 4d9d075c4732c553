"""The rebuild after a Python-only change (qx_build.quick) on real files, without a chroot or an OS tree:
the inputs' fingerprint over a small fake repository, the base's record, the erofs UUID read from images
mkfs.erofs made, and the root put into a copy of a GPT disk image sfdisk laid out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qx_build import gpt, live, quick
from qx_common.errors import ExternalError

MiB = 1024 * 1024
VERSION = "0.1.0"
EPOCH = "1767225600"


# --- fingerprint ------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """A fake repository and the other inputs of :func:`quick.fingerprint`."""

    repo: Path
    wheel_dir: Path
    trust_dir: Path
    mkosi_cache: Path
    signing_files: list[Path]
    mkosi_args: list[str] = field(default_factory=lambda: ["--profile", "default", "--key", "k"])
    version: str = VERSION
    epoch: str = EPOCH
    mkosi_version: str = "25.3"
    tools: str = "systemd-repart 254.26-1~bpo12+1\n"

    def fingerprint(self) -> str:
        return quick.fingerprint(repo=self.repo, wheel_dir=self.wheel_dir, trust_dir=self.trust_dir,
                                 mkosi_args=list(self.mkosi_args), version=self.version, epoch=self.epoch,
                                 mkosi_version=self.mkosi_version, mkosi_cache=self.mkosi_cache,
                                 signing_files=list(self.signing_files), tools=self.tools)


def _inputs(tmp_path: Path) -> Inputs:
    repo = tmp_path / "repo"
    files = {
        "mkosi.conf": "[Output]\nFormat=disk\n",
        "image/repart/x.conf": "[Partition]\nType=root\n",
        "image/scripts/s": "#!/bin/sh\necho finalize\n",
        "image/qx_build/m.py": "X = 1\n",
        "image/README.md": "# The image\n",
        "image/size-record.json": "{}\n",
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "image/scripts/s").chmod(0o755)
    (repo / "image/repart/x.conf").chmod(0o644)
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "tuf-root.json").write_text('{"signed": {}}\n')
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "dep-1.0-py3-none-any.whl").write_bytes(b"PK dep 1.0")
    (wheels / f"quantix_os-{VERSION}-py3-none-any.whl").write_bytes(b"PK ours")
    cache = tmp_path / "cache"
    (cache / "debian~trixie~x86-64.cache").mkdir(parents=True)
    (cache / "debian~trixie~x86-64.cache" / "usr").mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "db.key").write_text("-----BEGIN PRIVATE KEY-----\nA\n")
    (keys / "db.crt").write_text("-----BEGIN CERTIFICATE-----\nB\n")
    return Inputs(repo=repo, wheel_dir=wheels, trust_dir=trust, mkosi_cache=cache,
                  signing_files=[keys / "db.key", keys / "db.crt"])


def _replace_cache_entry(i: Inputs) -> None:
    """A rebuilt cache: a new directory in the old one's place (made before the old one goes, so its
    inode differs), with the old one's mtime, so only its identity tells them apart."""
    old = i.mkosi_cache / "debian~trixie~x86-64.cache"
    new = i.mkosi_cache / "new.cache"
    new.mkdir()
    st = old.stat()
    shutil.rmtree(old)
    new.rename(old)
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert old.stat().st_ino != st.st_ino and old.stat().st_mtime_ns == st.st_mtime_ns


def _set(attr: str, value: object) -> Callable[[Inputs], None]:
    return lambda i: setattr(i, attr, value)


CHANGES: dict[str, Callable[[Inputs], None]] = {
    "mkosi.conf": lambda i: (i.repo / "mkosi.conf").write_text("[Output]\nFormat=esp\n"),
    "mkosi.local.conf beside it": lambda i: (i.repo / "mkosi.local.conf").write_text("[Content]\nPackages=vim\n"),
    "a mkosi.conf.d drop-in": lambda i: ((i.repo / "mkosi.conf.d").mkdir(),
                                         (i.repo / "mkosi.conf.d/10-x.conf").write_text("[Content]\n")),
    "image file content": lambda i: (i.repo / "image/repart/x.conf").write_text("[Partition]\nType=esp\n"),
    "executable bit": lambda i: (i.repo / "image/scripts/s").chmod(0o644),
    "new file under image": lambda i: (i.repo / "image/repart/y.conf").write_text("[Partition]\n"),
    "file removed from image": lambda i: (i.repo / "image/repart/x.conf").unlink(),
    "trust file": lambda i: (i.trust_dir / "tuf-root.json").write_text('{"signed": {"version": 2}}\n'),
    "new trust file": lambda i: (i.trust_dir / "dev-update-url").write_text("http://10.0.2.2:8080\n"),
    "third-party wheel": lambda i: (i.wheel_dir / "dep-1.0-py3-none-any.whl").write_bytes(b"PK dep 1.0 rebuilt"),
    "new third-party wheel": lambda i: (i.wheel_dir / "other-2.0-py3-none-any.whl").write_bytes(b"PK other"),
    "signing key": lambda i: i.signing_files[0].write_text("-----BEGIN PRIVATE KEY-----\nC\n"),
    "signing certificate": lambda i: i.signing_files[1].write_text("-----BEGIN CERTIFICATE-----\nD\n"),
    "mkosi args": _set("mkosi_args", ["--profile", "small", "--key", "k"]),
    "version": _set("version", "0.1.1"),
    "epoch": _set("epoch", "1767225601"),
    "mkosi version": _set("mkosi_version", "25.4"),
    "a host tool's version": _set("tools", "systemd-repart 257.1-1\n"),
    "a file mkosi copies (image/extra) with a __pycache__": lambda i: (
        (i.repo / "image/extra/__pycache__").mkdir(parents=True), (i.repo / "image/extra/__pycache__/x.pyc").write_bytes(b"x")),
    "a symlink to a directory under image": lambda i: (i.repo / "image/link").symlink_to("repart"),
    "an empty directory under image": lambda i: (i.repo / "image/empty").mkdir(),
    "a directory's mode": lambda i: (i.repo / "image/repart").chmod(0o700),
    "cache entry replaced": _replace_cache_entry,
}


def _touch_everything(i: Inputs) -> None:
    for path in [*i.repo.rglob("*"), *i.trust_dir.iterdir(), *i.wheel_dir.iterdir(), *i.signing_files]:
        os.utime(path, (1_000_000_000, 1_000_000_000))


def _pycache(i: Inputs) -> None:
    (i.repo / "image/qx_build/__pycache__").mkdir()
    (i.repo / "image/qx_build/__pycache__/m.cpython-311.pyc").write_bytes(b"\x00compiled")


NO_CHANGES: dict[str, Callable[[Inputs], None]] = {
    "our wheel": lambda i: (i.wheel_dir / f"quantix_os-{VERSION}-py3-none-any.whl").write_bytes(b"PK ours, new code"),
    "qx_build module": lambda i: (i.repo / "image/qx_build/m.py").write_text("X = 2\n"),
    "new qx_build module": lambda i: (i.repo / "image/qx_build/n.py").write_text("Y = 1\n"),
    "image/README.md": lambda i: (i.repo / "image/README.md").write_text("# The image, better explained\n"),
    "image/size-record.json": lambda i: (i.repo / "image/size-record.json").write_text('{"root": 1}\n'),
    "__pycache__ of the build tool": _pycache,
    "mtimes only": _touch_everything,
}


def test_fingerprint_is_stable(tmp_path: Path) -> None:
    i = _inputs(tmp_path)
    first = i.fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    assert i.fingerprint() == first
    # Not tied to where the repository is: the same files elsewhere give the same fingerprint.
    j = _inputs(tmp_path / "elsewhere")
    j.mkosi_cache = i.mkosi_cache  # the cache's identity is its inodes
    assert j.fingerprint() == first


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_fingerprint_changes_with_every_input_of_the_mkosi_run(tmp_path: Path, change: str) -> None:
    i = _inputs(tmp_path)
    before = i.fingerprint()
    CHANGES[change](i)
    after = i.fingerprint()
    assert after != before
    assert i.fingerprint() == after


@pytest.mark.parametrize("change", list(NO_CHANGES), ids=list(NO_CHANGES))
def test_fingerprint_ignores_our_python_code_and_documentation(tmp_path: Path, change: str) -> None:
    i = _inputs(tmp_path)
    before = i.fingerprint()
    NO_CHANGES[change](i)
    assert i.fingerprint() == before


def test_fingerprint_without_trust_dir_or_cache(tmp_path: Path) -> None:
    i = _inputs(tmp_path)
    with_them = i.fingerprint()
    shutil.rmtree(i.trust_dir)
    shutil.rmtree(i.mkosi_cache)
    without = i.fingerprint()  # a first build: neither is there yet
    assert without != with_them


# --- record, usable, invalidate ---------------------------------------------------------------------------


def _base(tmp_path: Path) -> tuple[Path, Path]:
    """A base directory with everything a rebuild takes from it, and our wheel."""
    base = tmp_path / "disk"
    (base / live.TREE_DIR / "usr").mkdir(parents=True)
    for path in quick.base_files(base, VERSION):
        path.write_bytes(b"base file " + path.name.encode())
    wheel = tmp_path / f"quantix_os-{VERSION}-py3-none-any.whl"
    wheel.write_bytes(b"PK ours")
    return base, wheel


def test_base_files_are_named_after_the_version(tmp_path: Path) -> None:
    names = [p.name for p in quick.base_files(tmp_path, VERSION)]
    assert f"quantix-os_{VERSION}.raw" in names and f"quantix-os_{VERSION}.efi" in names
    assert all(p.parent == tmp_path for p in quick.base_files(tmp_path, VERSION))


def test_record_makes_the_base_usable_for_the_same_inputs_only(tmp_path: Path) -> None:
    base, wheel = _base(tmp_path)
    assert quick.usable(base, inputs="abc", version=VERSION) .startswith("no finished earlier build to start from")

    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    assert quick.usable(base, inputs="abc", version=VERSION) is None
    assert (base / quick.KEPT_WHEEL).read_bytes() == wheel.read_bytes()  # the wheel in the tree, kept
    data = json.loads((base / quick.RECORD).read_text())
    assert data["inputs"] == "abc"
    assert data["wheel_sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    # Written atomically: only the record and the kept wheel, no temporary file beside them.
    assert sorted(p.name for p in base.iterdir() if p.is_file() and "quick" in p.name) == \
        sorted([quick.RECORD, quick.KEPT_WHEEL])
    assert not list(base.glob("*.tmp"))

    reason = quick.usable(base, inputs="abd", version=VERSION)
    assert reason is not None and "input" in reason

    # Recording again replaces the record (a new wheel, the same inputs).
    wheel.write_bytes(b"PK ours, new code")
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    assert json.loads((base / quick.RECORD).read_text())["wheel_sha256"] == \
        hashlib.sha256(b"PK ours, new code").hexdigest()
    assert quick.usable(base, inputs="abc", version=VERSION) is None
    assert not list(base.glob("*.tmp"))


def test_invalidate_forgets_the_base(tmp_path: Path) -> None:
    base, wheel = _base(tmp_path)
    quick.invalidate(base)  # nothing to forget: no error
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    quick.invalidate(base)
    assert not (base / quick.RECORD).exists()
    assert quick.usable(base, inputs="abc", version=VERSION) .startswith("no finished earlier build to start from")
    # Only the record goes: the tree and the files stay for mkosi (or the next rebuild) to replace.
    assert (base / live.TREE_DIR).is_dir() and all(p.exists() for p in quick.base_files(base, VERSION))


@pytest.mark.parametrize("content,expect", [
    ("{not json", "unreadable"),
    ("", "unreadable"),
    ('["format", 1]', "another version"),
    ('{"inputs": "abc"}', "another version"),
    ('{"format": 0, "inputs": "abc", "wheel_sha256": ""}', "another version"),
    ('{"format": "1", "inputs": "abc", "wheel_sha256": ""}', "another version"),
], ids=["garbage", "empty", "a list", "no format", "older format", "format as text"])
def test_a_record_that_is_not_ours_is_not_trusted(tmp_path: Path, content: str, expect: str) -> None:
    base, _ = _base(tmp_path)
    (base / quick.RECORD).write_text(content)
    reason = quick.usable(base, inputs="abc", version=VERSION)
    assert reason is not None and expect in reason


def test_an_unreadable_record_is_a_reason_not_an_error(tmp_path: Path) -> None:
    base, _ = _base(tmp_path)
    (base / quick.RECORD).mkdir()  # reading it fails with IsADirectoryError
    reason = quick.usable(base, inputs="abc", version=VERSION)
    assert reason is not None and "unreadable" in reason


@pytest.mark.parametrize("index", range(1 + len(quick.base_files(Path("/b"), VERSION))),
                         ids=[live.TREE_DIR, *(p.name for p in quick.base_files(Path("/b"), VERSION))])
def test_a_missing_part_of_the_base_is_named(tmp_path: Path, index: int) -> None:
    base, wheel = _base(tmp_path)
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    gone = [base / live.TREE_DIR, *quick.base_files(base, VERSION)][index]
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    reason = quick.usable(base, inputs="abc", version=VERSION)
    assert reason is not None and gone.name in reason


def test_another_version_needs_its_own_base_files(tmp_path: Path) -> None:
    base, wheel = _base(tmp_path)
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    reason = quick.usable(base, inputs="abc", version="0.2.0")
    assert reason is not None and "quantix-os_0.2.0.raw" in reason


# --- erofs_uuid -------------------------------------------------------------------------------------------

UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def _erofs(tmp_path: Path, uuid: str = UUID) -> Path:
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/qx-tool").write_text("#!/bin/sh\n")
    img = tmp_path / "fs.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", "-U", uuid, str(img), str(src)], check=True)
    return img


def test_erofs_uuid_reads_what_mkfs_erofs_wrote(tmp_path: Path) -> None:
    assert quick.erofs_uuid(_erofs(tmp_path)) == UUID


def test_erofs_uuid_is_what_dump_erofs_reports(tmp_path: Path) -> None:
    other = "7d444840-9dc0-11d1-b245-5ffdce74fad2"
    img = _erofs(tmp_path, other)
    assert quick.erofs_uuid(img) == other
    # dump.erofs (erofs-utils) prints the superblock's UUID: a second opinion on the offset.
    if shutil.which("dump.erofs"):
        out = subprocess.run(["dump.erofs", str(img)], capture_output=True, text=True, check=True).stdout
        assert other in out


def test_erofs_uuid_at_an_offset(tmp_path: Path) -> None:
    img = _erofs(tmp_path)
    offset = 3 * MiB + 4096  # where a partition starts in a disk image
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.write(os.urandom(offset))
        f.write(img.read_bytes())
        f.write(os.urandom(MiB))
    assert quick.erofs_uuid(disk, offset) == UUID


def test_erofs_uuid_of_a_file_too_short_is_an_error(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"\0" * (1024 + 48 + 15))  # one byte short of the UUID's end
    with pytest.raises(ExternalError) as e:
        quick.erofs_uuid(short)
    assert str(short) in e.value.message
    img = _erofs(tmp_path)
    with pytest.raises(ExternalError):
        quick.erofs_uuid(img, img.stat().st_size)


# --- disk_from_base ---------------------------------------------------------------------------------------

ROOT_A_SIZE = 8 * MiB
PATTERNS = {"esp": b"\x11\x22", "root-a": b"\xaa", "root-a-verity": b"\x5c\xc5\x33",
            "quantix-data": b"\xde\xad\xbe\xef"}


def _base_disk(tmp_path: Path) -> tuple[Path, dict[str, gpt.Partition]]:
    """A 64 MiB GPT disk image as the base, every partition full of its own pattern."""
    base = tmp_path / "base"
    base.mkdir()
    disk = base / f"quantix-os_{VERSION}.raw"
    with disk.open("wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk)], text=True, check=True, input=(
        "label: gpt\n"
        f"start=2048, size=4MiB, type={gpt.ESP_TYPE}, name=esp\n"
        f"size={ROOT_A_SIZE // 512}, type={gpt.ROOT_X86_64_TYPE}, name=root-a\n"
        f"size=1MiB, type={gpt.ROOT_X86_64_VERITY_TYPE}, name=root-a-verity\n"
        f"type={gpt.LINUX_GENERIC_TYPE}, name=quantix-data\n"))
    parts = {p.name: p for p in gpt.read_table(disk)}
    assert set(parts) == set(PATTERNS) and parts["root-a"].size == ROOT_A_SIZE
    with disk.open("r+b") as f:
        for name, pattern in PATTERNS.items():
            p = parts[name]
            f.seek(p.start)
            f.write((pattern * (p.size // len(pattern) + 1))[: p.size])
    return base, parts


def _root(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    root = tmp_path / "root.erofs"
    root.write_bytes(data)
    return root, data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_from_base_puts_the_root_into_root_a_and_nothing_else(tmp_path: Path) -> None:
    base, parts = _base_disk(tmp_path)
    disk = base / f"quantix-os_{VERSION}.raw"
    before = disk.read_bytes()
    root, data = _root(tmp_path, MiB + 4096)
    out = tmp_path / "out" / "disk.raw"
    out.parent.mkdir()
    out.write_bytes(b"an earlier build's disk")  # replaced, not written into

    quick.disk_from_base(base, version=VERSION, root=root, out=out)

    assert disk.read_bytes() == before                    # the base stays as mkosi left it
    assert out.stat().st_size == len(before)
    got = out.read_bytes()
    a = parts["root-a"]
    assert got[a.start:a.start + len(data)] == data
    assert got[a.start + len(data):a.start + a.size] == bytes(a.size - len(data))  # no 0xAA left
    # Everything outside root-a — both GPT headers and tables, every other partition — is the base's.
    assert got[:a.start] == before[:a.start]
    assert got[a.start + a.size:] == before[a.start + a.size:]
    for name in ("esp", "root-a-verity", "quantix-data"):
        p = parts[name]
        assert got[p.start:p.start + p.size] == before[p.start:p.start + p.size], name
    assert [(p.name, p.start, p.size, p.uuid) for p in gpt.read_table(out)] == \
        [(p.name, p.start, p.size, p.uuid) for p in parts.values()]
    subprocess.run(["sfdisk", "--verify", str(out)], check=True, capture_output=True)


def test_disk_from_base_twice_gives_the_same_disk(tmp_path: Path) -> None:
    base, _ = _base_disk(tmp_path)
    root, _ = _root(tmp_path, 2 * MiB)
    first, second = tmp_path / "first.raw", tmp_path / "second.raw"
    quick.disk_from_base(base, version=VERSION, root=root, out=first)
    quick.disk_from_base(base, version=VERSION, root=root, out=second)
    assert _sha256(first) == _sha256(second)


def test_disk_from_base_with_a_root_larger_than_root_a_fails(tmp_path: Path) -> None:
    # rebuild_root refuses such a root before it gets here; disk_from_base itself only fails (the output
    # is then not a usable disk), and the base is not touched.
    base, _ = _base_disk(tmp_path)
    disk = base / f"quantix-os_{VERSION}.raw"
    digest = _sha256(disk)
    root, _ = _root(tmp_path, ROOT_A_SIZE + 4096)
    with pytest.raises(ExternalError):
        quick.disk_from_base(base, version=VERSION, root=root, out=tmp_path / "disk.raw")
    assert _sha256(disk) == digest


def test_disk_from_base_with_a_root_that_fills_root_a(tmp_path: Path) -> None:
    # rebuild_root accepts a root of exactly the partition's size (it refuses only a larger one).
    base, parts = _base_disk(tmp_path)
    root, data = _root(tmp_path, ROOT_A_SIZE)
    out = tmp_path / "disk.raw"
    quick.disk_from_base(base, version=VERSION, root=root, out=out)
    a = parts["root-a"]
    with out.open("rb") as f:
        f.seek(a.start)
        assert f.read(a.size) == data


def test_disk_from_base_without_a_base_disk_is_an_error(tmp_path: Path) -> None:
    root, _ = _root(tmp_path, 4096)
    (tmp_path / "base").mkdir()
    with pytest.raises(ExternalError):
        quick.disk_from_base(tmp_path / "base", version=VERSION, root=root, out=tmp_path / "disk.raw")



def test_a_hand_edit_of_the_kept_tree_or_a_base_file_makes_the_base_unusable(tmp_path: Path) -> None:
    """mtimes can be set back, ctimes cannot: an edit in the tree shows, and so does a replaced base file."""
    base, wheel = _base(tmp_path)
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    assert quick.usable(base, inputs="abc", version=VERSION) is None
    f = base / live.TREE_DIR / "usr" / "edited"
    f.write_text("by hand\n")
    os.utime(f, (0, 0))
    assert "changed since" in (quick.usable(base, inputs="abc", version=VERSION) or "")
    quick.record(base, inputs="abc", wheel=wheel, version=VERSION)
    disk = quick.base_files(base, VERSION)[0]
    st = disk.stat()
    disk.write_bytes(disk.read_bytes())  # same bytes, rewritten: its mtime moved
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert "changed since" in (quick.usable(base, inputs="abc", version=VERSION) or "")


def test_host_tools_lists_installed_packages_only() -> None:
    tools = quick.host_tools()
    assert "mkosi " in tools and "erofs-utils " in tools
    assert tools.splitlines() == sorted(tools.splitlines())
