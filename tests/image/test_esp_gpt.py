"""ESP editing and GPT reading on a real GPT disk image file with a real FAT filesystem (mtools)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qx_build import esp, gpt
from qx_common.errors import UserError
from qx_update import bootentry

MiB = 1024 * 1024
EPOCH = 1767225600


def _disk_with_esp(tmp_path: Path, ukis: list[str]) -> Path:
    img = tmp_path / "disk.raw"
    img.write_bytes(b"")
    with img.open("r+b") as f:
        f.truncate(200 * MiB)
    layout = (
        "label: gpt\n"
        f"start=2048, size={64 * MiB // 512}, type={gpt.ESP_TYPE}, name=esp\n"
        f"size={64 * MiB // 512}, type={gpt.ROOT_X86_64_TYPE}, name=root-a\n"
        f"type={gpt.LINUX_GENERIC_TYPE}, name=quantix-data\n"
    )
    subprocess.run(["sfdisk", "-q", str(img)], input=layout, text=True, check=True)
    start = gpt.find(gpt.read_table(img), "esp").start
    subprocess.run(["mkfs.vfat", "-F", "32", "--offset", str(start // 512), str(img), str(64 * MiB // 1024)],
                   check=True, capture_output=True)
    target = f"{img}@@{start}"
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["mmd", "-i", target, "::/EFI", "::/EFI/Linux"], check=True, env=env)
    for name in ukis:
        uki = tmp_path / name
        uki.write_bytes(b"MZ-fake-uki-" + name.encode())
        subprocess.run(["mcopy", "-i", target, str(uki), f"::/EFI/Linux/{name}"], check=True, env=env)
    return img


def test_read_table_names_types_and_offsets(tmp_path: Path) -> None:
    img = _disk_with_esp(tmp_path, [])
    parts = gpt.read_table(img)
    assert [p.name for p in parts] == ["esp", "root-a", "quantix-data"]
    assert parts[0].type == gpt.ESP_TYPE and parts[0].start == 2048 * 512 and parts[0].size == 64 * MiB
    with pytest.raises(UserError, match="no partition named 'root-b'"):
        gpt.find(parts, "root-b")


def test_read_table_refuses_a_non_gpt_file(tmp_path: Path) -> None:
    f = tmp_path / "blank.raw"
    f.write_bytes(b"\0" * MiB)
    with pytest.raises(Exception, match="partition table|sfdisk"):
        gpt.read_table(f)


def test_slot_a_gets_the_sealed_uki_and_its_entry_and_loader_conf(tmp_path: Path) -> None:
    img = _disk_with_esp(tmp_path, ["quantix-os-6.12.0-amd64.efi"])
    sealed = tmp_path / "sealed.efi"
    sealed.write_bytes(b"MZ-sealed")
    cmdline = f"root=/dev/mapper/root rootfstype=erofs ro roothash={'ab' * 32} console=tty1 console=ttyS0,115200"
    esp.install_slot_a(img, version="1.2.3", uki=sealed, cmdline=cmdline, source_date_epoch=EPOCH)

    e = esp.EspImage(img, source_date_epoch=EPOCH)
    assert e.list("EFI/Linux") == [], "mkosi's UKI (placeholder root hash) is removed"
    assert e.list("EFI/quantix") == ["quantix-os_1.2.3.efi"]
    assert e.copy_out("EFI/quantix/quantix-os_1.2.3.efi", tmp_path / "out.efi").read_bytes() == b"MZ-sealed"
    entry = bootentry.parse_entry(e.read_text("loader/entries/quantix-a.conf"))
    assert entry["efi"] == "/EFI/quantix/quantix-os_1.2.3.efi"
    assert entry["version"] == "1.2.3" and entry["sort-key"] == "quantix-os"
    assert entry["options"] == cmdline, "a verity command line is the entry's as it is"
    assert "default quantix-*" in e.read_text("loader/loader.conf")


def test_slot_a_of_a_derived_disk_replaces_the_earlier_uki(tmp_path: Path) -> None:
    img = _disk_with_esp(tmp_path, ["mkosi.efi"])
    first, second = tmp_path / "first.efi", tmp_path / "second.efi"
    first.write_bytes(b"MZ-1")
    second.write_bytes(b"MZ-2")
    esp.install_slot_a(img, version="1.2.3", uki=first, cmdline="ro", source_date_epoch=EPOCH)
    esp.install_slot_a(img, version="1.2.4", uki=second, cmdline="ro", source_date_epoch=EPOCH)
    e = esp.EspImage(img, source_date_epoch=EPOCH)
    assert e.list("EFI/quantix") == ["quantix-os_1.2.4.efi"]
    assert bootentry.parse_entry(e.read_text("loader/entries/quantix-a.conf"))["version"] == "1.2.4"
