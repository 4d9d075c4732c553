"""The ISO's live system from the disk build's tree (qx_build.live + image/scripts/finalize), on real
files: the finalize script run on a small tree, ukify and systemd-repart for real, the ESP read back
with mtools and the UKI's sections with qx_build.pe."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qx_build import gpt, live, pe
from qx_build.paths import REPO
from qx_common.errors import ExternalError

EPOCH = 1767225600
HOST_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")  # systemd-boot-efi (image/host-deps.sh)


def _tree(root: Path) -> None:
    """The few paths image/scripts/finalize works on, as a Debian tree has them."""
    for d in ("etc/libvirt/qemu/networks/autostart", "etc/systemd", "var/lib", "usr/lib/systemd/boot/efi",
              "usr/lib/modules/6.12.0-test-amd64/kernel", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/shadow").write_text("root:!:20000:0:99999:7:::\n")
    (root / "etc/fstab").write_text("PARTLABEL=quantix-data /var ext4 defaults 0 2\n")
    (root / "etc/libvirt/libvirtd.conf").write_text("# factory\n")
    (root / "usr/lib/os-release").write_text('ID=debian\nIMAGE_ID=quantix-os\nIMAGE_VERSION="0.0.1"\n')
    (root / "usr/bin/qx-tool").write_text("#!/bin/sh\n")
    (root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi").write_bytes(b"MZ boot")
    (root / "usr/lib/systemd/boot/efi/linuxx64.efi.stub").write_bytes(HOST_STUB.read_bytes())


def _finalize(tmp_path: Path) -> Path:
    """Run the real finalize script as mkosi would (BUILDROOT, OUTPUTDIR, SOURCE_DATE_EPOCH)."""
    root, out = tmp_path / "root", tmp_path / "out"
    _tree(root)
    out.mkdir()
    env = {"PATH": os.environ["PATH"], "BUILDROOT": str(root), "OUTPUTDIR": str(out),
           "SOURCE_DATE_EPOCH": str(EPOCH)}
    res = subprocess.run([str(REPO / "image/scripts/finalize")], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def _cpio_names(cpio: Path) -> list[str]:
    out = subprocess.run(["cpio", "-it", "--quiet"], stdin=cpio.open("rb"), capture_output=True, check=True)
    return out.stdout.decode().splitlines()


def _esp_file(disk: Path, path: str, dest: Path) -> bytes:
    esp = [p for p in gpt.read_table(disk) if p.type == gpt.ESP_TYPE]
    assert len(esp) == 1, esp
    subprocess.run(["mcopy", "-n", "-i", f"{disk}@@{esp[0].start}", f"::{path}", str(dest)], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return dest.read_bytes()


def test_finalize_exports_the_tree_and_the_live_esp_boots_it(tmp_path: Path) -> None:
    out = _finalize(tmp_path)
    exported = out / live.EXPORT_DIR
    names = _cpio_names(exported / "root.cpio")
    assert names == sorted(names) and "usr/bin/qx-tool" in names and "etc/shadow" in names
    assert "etc/fstab" not in names                      # the installed host's mounts
    assert (exported / "uname").read_text().strip() == "6.12.0-test-amd64"
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(1 << 20))              # ukify stores the kernel as bytes

    disk = live.build_esp(out, kernel, tmp_path / "work", source_date_epoch=EPOCH)
    uki = tmp_path / "BOOTX64.EFI"
    _esp_file(disk, "EFI/BOOT/BOOTX64.EFI", uki)
    assert pe.read_section(uki, ".linux")[: 1 << 20] == kernel.read_bytes()
    assert pe.read_section(uki, ".initrd")[: (exported / "root.cpio").stat().st_size] == \
        (exported / "root.cpio").read_bytes()
    assert pe.read_section(uki, ".cmdline").rstrip(b"\0").decode() == live.CMDLINE
    assert "quantix.live=1" in live.CMDLINE

    # Reproducible: the same inputs give the same ESP files, byte for byte, at the same places. Not the whole
    # image: the FAT directory entries' creation and write times come from the clock (systemd-repart 254
    # makes the directories with mtools, which does not read SOURCE_DATE_EPOCH), so two builds in
    # different seconds differ in those 16 bytes; the UKI inside does not.
    again = live.build_esp(out, kernel, tmp_path / "work2", source_date_epoch=EPOCH)
    assert _esp_file(again, "EFI/BOOT/BOOTX64.EFI", tmp_path / "again.efi") == uki.read_bytes()
    assert [(p.start, p.size, p.type) for p in gpt.read_table(again)] == \
        [(p.start, p.size, p.type) for p in gpt.read_table(disk)]


def test_a_missing_export_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / live.EXPORT_DIR).mkdir()
    (tmp_path / live.EXPORT_DIR / "uname").write_text("6.12\n")
    with pytest.raises(ExternalError) as e:
        live.build_esp(tmp_path, tmp_path / "vmlinuz", tmp_path / "work", source_date_epoch=EPOCH)
    assert "root.cpio" in e.value.message and "linuxx64.efi.stub" in e.value.message
    assert "make image" in (e.value.hint or "")
