"""qx_common.verity against cryptsetup's own implementation: ``veritysetup format`` makes the same bytes."""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from qx_common import verity

SHA = "5e" * 32


def _veritysetup_format(data: Path, blocks: int, params: verity.Params, tmp: Path) -> tuple[str, bytes]:
    hashf = tmp / "hash"
    hashf.write_bytes(b"")
    out = subprocess.run(["veritysetup", "format", str(data), str(hashf), "--data-block-size=4096",
                          "--hash-block-size=4096", "--hash=sha256", f"--salt={params.salt.hex()}",
                          f"--uuid={params.uuid}", f"--data-blocks={blocks}"],
                         check=True, capture_output=True, text=True).stdout
    (root,) = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Root hash")]
    return root, hashf.read_bytes()


# One block (no level), one level exactly full and one block over, three levels.
@pytest.mark.parametrize("blocks", [1, 2, 128, 129, 16385])
def test_tree_is_byte_for_byte_what_veritysetup_makes(blocks: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(blocks * verity.BLOCK) + b"padding after the filesystem")
    params = verity.params_for(SHA)
    with data.open("rb") as f:
        tree = verity.build(f, blocks * verity.BLOCK, params)
    root, image = _veritysetup_format(data, blocks, params, tmp_path)
    assert tree.roothash == root
    assert image[:len(tree.image)] == tree.image and not image[len(tree.image):].strip(b"\0")
    assert verity.tree_size(blocks * verity.BLOCK) == len(tree.image)
    subprocess.run(["veritysetup", "verify", str(data), str(tmp_path / "hash"), root], check=True, capture_output=True)


def test_params_are_a_function_of_the_signed_slot_hash() -> None:
    a, b = verity.params_for(SHA), verity.params_for("5f" * 32)
    assert a == verity.params_for(SHA) and a.salt != b.salt and a.uuid != b.uuid
    assert len(a.salt) == 32 and isinstance(a.uuid, uuid.UUID)
    for bad in ("", "5E" * 32, "5e" * 31, "zz" * 32):
        with pytest.raises(verity.VerityError, match="slot_sha256"):
            verity.params_for(bad)


def test_a_short_or_unaligned_source_is_refused() -> None:
    params = verity.params_for(SHA)
    with pytest.raises(verity.VerityError, match="ended 4096 bytes before"):
        verity.build(io.BytesIO(b"\1" * 4096), 8192, params)
    for size in (0, 4095, 4097, -4096):
        with pytest.raises(verity.VerityError, match="multiple of 4096"):
            verity.build(io.BytesIO(b"\1" * 8192), size, params)


def test_partuuids_are_the_halves_of_the_root_hash() -> None:
    root = "0123456789abcdef" * 4
    assert verity.partuuids(root) == ("01234567-89ab-cdef-0123-456789abcdef", "01234567-89ab-cdef-0123-456789abcdef")
    root = "00" * 16 + "ff" * 16
    assert verity.partuuids(root) == ("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff")


def test_roothash_on_a_command_line() -> None:
    h = "ab" * 32
    assert verity.roothash_of(f"root=/dev/mapper/root ro roothash={h} console=ttyS0") == h
    assert verity.roothash_of("root=PARTLABEL=root-a ro") is None and verity.roothash_of(None) is None
    assert verity.roothash_of(f"roothash={'cd' * 32} roothash={h}") == h, "the last word counts, as for systemd"
    for bad in ("roothash=abc", f"roothash={h.upper()}", f"roothash={h}0", "roothash="):
        with pytest.raises(verity.VerityError, match="roothash"):
            verity.roothash_of(f"ro {bad}")
    with pytest.raises(verity.VerityError, match="placeholder"):
        verity.roothash_of(f"ro {verity.ROOTHASH_PLACEHOLDER}")


def test_with_roothash_replaces_the_one_word_in_place() -> None:
    base = f"root=/dev/mapper/root ro {verity.ROOTHASH_PLACEHOLDER} console=tty1"
    sealed = verity.with_roothash(base, "ab" * 32)
    assert sealed == f"root=/dev/mapper/root ro roothash={'ab' * 32} console=tty1" and len(sealed) == len(base)
    assert verity.with_roothash(sealed, "cd" * 32) == f"root=/dev/mapper/root ro roothash={'cd' * 32} console=tty1"
    for bad in ("ro console=tty1", f"{verity.ROOTHASH_PLACEHOLDER} {verity.ROOTHASH_PLACEHOLDER}", "roothash=12"):
        with pytest.raises(verity.VerityError, match="one roothash="):
            verity.with_roothash(bad, "ab" * 32)
    with pytest.raises(verity.VerityError, match="64 lowercase hex"):
        verity.with_roothash(base, "AB" * 32)


def test_mkosi_conf_carries_the_placeholder() -> None:
    from qx_build.paths import REPO

    lines = (REPO / "mkosi.conf").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("KernelCommandLine="))
    value = [lines[start].partition("=")[2]]
    end = next(i for i, line in enumerate(lines[start + 1:], start + 1) if not line[:1].isspace())
    words = " ".join([value[0], *lines[start + 1:end]]).split()
    assert verity.ROOTHASH_PLACEHOLDER in words and "root=/dev/mapper/root" in words
    assert not [w for w in words if w.startswith("root=PARTLABEL")]


class _Trickle(io.RawIOBase):
    """A raw (unbuffered) stream that returns at most 1000 bytes a read, as a block device or pipe read
    without a buffer may: short reads that are not the end of the data."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), 1000, len(self._data) - self._at)
        b[:n] = self._data[self._at:self._at + n]
        self._at += n
        return n


def test_short_reads_are_not_the_end_of_the_data() -> None:
    data = os.urandom(300 * verity.BLOCK)
    params = verity.params_for(SHA)
    whole = verity.build(io.BytesIO(data), len(data), params)
    assert verity.build(_Trickle(data), len(data), params) == whole
    with pytest.raises(verity.VerityError, match="ended 4096 bytes before"):
        verity.build(_Trickle(data[:-verity.BLOCK]), len(data), params)
