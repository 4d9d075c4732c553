"""qx_build's readers against real files: mkfs.erofs images and a real systemd-stub PE binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qx_build import erofs, pe
from qx_common.errors import UserError

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")


def _mkfs(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    img = tmp_path / "fs.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(img), str(src)], check=True)
    return img


def test_erofs_size_is_the_filesystem_not_the_padding(tmp_path: Path) -> None:
    img = _mkfs(tmp_path, {"a": b"x" * 100_000, "b": b"hello"})
    fs_size = img.stat().st_size
    # Pad like a partition: the reader must still report only the filesystem's own bytes.
    with img.open("ab") as f:
        f.truncate(fs_size + 10 * 1024 * 1024)
    assert erofs.filesystem_size(img) == fs_size


def test_erofs_size_grows_with_content(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()
    small = erofs.filesystem_size(_mkfs(tmp_path / "small", {"a": b"1"}))
    big = erofs.filesystem_size(_mkfs(tmp_path / "big", {"a": bytes(range(256)) * 4096}))
    assert big > small + 512 * 1024


def test_erofs_rejects_other_data(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(UserError, match="not an erofs filesystem"):
        erofs.filesystem_size(junk)
    short = tmp_path / "short"
    short.write_bytes(b"\0" * 100)
    with pytest.raises(UserError, match="too short"):
        erofs.filesystem_size(short)


@pytest.fixture
def uki(tmp_path: Path) -> Path:
    """A UKI-like PE: the real systemd stub with .cmdline and .osrel sections added by objcopy."""
    if not STUB.exists():
        pytest.fail(f"{STUB} missing: install systemd-boot-efi (make test does)")
    cmd = tmp_path / "cmdline"
    cmd.write_text("root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200\n")
    osrel = tmp_path / "osrel"
    osrel.write_text('NAME="Quantix OS"\nIMAGE_VERSION=1.2.3\n')
    out = tmp_path / "uki.efi"
    subprocess.run(["objcopy", "--add-section", f".osrel={osrel}", "--change-section-vma", ".osrel=0x20000",
                    "--add-section", f".cmdline={cmd}", "--change-section-vma", ".cmdline=0x30000",
                    str(STUB), str(out)], check=True)
    return out


def test_pe_reads_the_cmdline_section(uki: Path) -> None:
    assert pe.cmdline(uki) == "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200"
    names = [s.name for s in pe.sections(uki)]
    assert ".cmdline" in names and ".osrel" in names and ".text" in names


def test_pe_missing_section_and_non_pe(uki: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no .linux section"):
        pe.read_section(uki, ".linux")
    notpe = tmp_path / "x"
    notpe.write_bytes(b"ELF" + b"\0" * 200)
    with pytest.raises(UserError, match="not a PE file"):
        pe.sections(notpe)
