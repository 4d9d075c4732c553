"""Sealing a build for dm-verity (qx_build.sealing) on real files: a GPT disk image, a systemd-stub PE
signed with sbsign, and cryptsetup's veritysetup as the judge of the tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qx_build import gpt, pe, sealing, secureboot
from qx_common import verity
from qx_common.errors import UserError

MiB = 1024 * 1024
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
CMDLINE = f"root=/dev/mapper/root rootfstype=erofs ro {verity.ROOTHASH_PLACEHOLDER} console=ttyS0,115200"


def _disk(tmp_path: Path) -> Path:
    img = tmp_path / "disk.raw"
    with img.open("wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], text=True, check=True, input=(
        "label: gpt\n"
        f"size=16MiB, type={gpt.ROOT_X86_64_TYPE}, name=root-a\n"
        f"size=4MiB, type={gpt.ROOT_X86_64_VERITY_TYPE}, name=root-a-verity\n"
        f"type={gpt.LINUX_GENERIC_TYPE}, name=quantix-data\n"))
    return img


def _uki(tmp_path: Path, cmdline: str, kp: secureboot.KeyPair) -> Path:
    cmd = tmp_path / "cmdline"
    cmd.write_text(cmdline + "\0")
    unsigned, uki = tmp_path / "unsigned.efi", tmp_path / "mkosi.efi"
    subprocess.run(["objcopy", "--add-section", f".cmdline={cmd}", "--change-section-vma", ".cmdline=0x30000",
                    str(STUB), str(unsigned)], check=True)
    secureboot.sign(unsigned, uki, kp)
    return uki


def test_disk_slot_a_gets_the_tree_and_the_partition_uuids(tmp_path: Path) -> None:
    img = _disk(tmp_path)
    root = os.urandom(3 * MiB)
    by = {p.name: p for p in gpt.read_table(img)}
    with img.open("r+b") as f:
        f.seek(by["root-a"].start)
        f.write(root)
        f.seek(by["quantix-data"].start)
        f.write(b"DATA" * 1024)
    rootf = tmp_path / "root.erofs"
    rootf.write_bytes(root)
    tree = sealing.tree_of(rootf, len(root), "12" * 32)
    sealing.seal_disk(img, tree)

    after = {p.name: p for p in gpt.read_table(img)}
    assert (after["root-a"].uuid, after["root-a-verity"].uuid) == verity.partuuids(tree.roothash)
    assert after["quantix-data"].uuid == by["quantix-data"].uuid, "no other partition changes"
    with img.open("rb") as f:
        f.seek(after["root-a-verity"].start)
        (tmp_path / "hash").write_bytes(f.read(after["root-a-verity"].size))
        f.seek(after["quantix-data"].start)
        assert f.read(4096) == b"DATA" * 1024
    subprocess.run(["veritysetup", "verify", str(rootf), str(tmp_path / "hash"), tree.roothash], check=True,
                   capture_output=True)


def test_a_tree_larger_than_the_verity_partition_is_refused_before_writing(tmp_path: Path) -> None:
    img = _disk(tmp_path)
    before = img.read_bytes()
    big = verity.Tree(roothash="ab" * 32, image=b"\1" * (5 * MiB), data_blocks=16)
    with pytest.raises(UserError, match="does not fit root-a-verity"):
        sealing.seal_disk(img, big)
    assert img.read_bytes() == before


def test_uki_gets_the_root_hash_in_place_and_a_new_signature(tmp_path: Path) -> None:
    kp = secureboot.ensure_dev_keys(tmp_path / "keys")
    src = _uki(tmp_path, CMDLINE, kp)
    out = tmp_path / "sealed.efi"
    new = sealing.seal_uki(src, out, "cd" * 32, kp)
    assert new == CMDLINE.replace(verity.ROOTHASH_PLACEHOLDER, f"roothash={'cd' * 32}")
    assert pe.cmdline(out) == new and verity.roothash_of(pe.cmdline(out)) == "cd" * 32
    # Only the command line's bytes and the signature differ: no section moved.
    assert [(s.name, s.offset, s.size) for s in pe.sections(out)] == [(s.name, s.offset, s.size) for s in pe.sections(src)]
    secureboot.verify(out, kp, what="sealed")
    # Sealed again (a derived release from a sealed one): the old root hash is replaced, one signature.
    again = sealing.seal_uki(out, tmp_path / "again.efi", "ef" * 32, kp)
    assert pe.cmdline(tmp_path / "again.efi") == again and again.count("roothash=") == 1
    sigs = subprocess.run(["sbverify", "--list", str(tmp_path / "again.efi")], capture_output=True, text=True).stdout
    assert "signature 1\n" in sigs and "signature 2" not in sigs, sigs


def test_uki_without_a_root_hash_word_is_refused(tmp_path: Path) -> None:
    kp = secureboot.ensure_dev_keys(tmp_path / "keys")
    src = _uki(tmp_path, "root=PARTLABEL=root-a ro", kp)
    with pytest.raises(verity.VerityError, match="one roothash="):
        sealing.seal_uki(src, tmp_path / "out.efi", "cd" * 32, kp)
    assert not (tmp_path / "out.efi").exists()
