"""dm-verity for a root slot: the hash tree, its superblock, and where the boot finds both.

A release's root slot is its erofs filesystem (``slot_size`` bytes, the update payload) protected by a
dm-verity hash tree kept on the slot's own verity partition (``root-a-verity``/``root-b-verity``). The
release's UKI carries the tree's root hash on its signed command line (:data:`CMDLINE`), so one signed
file fixes kernel, initrd and every block of the root.

The boot uses systemd's own mechanisms, nothing of ours: ``systemd-veritysetup-generator`` in the initrd
reads ``roothash=`` and, given no data or hash device, opens ``/dev/disk/by-partuuid/<first 128 bits of
the root hash>`` as data and ``/dev/disk/by-partuuid/<last 128 bits>`` as hash device — the convention
systemd-repart and systemd-sysupdate use (:func:`partuuids`). ``root=/dev/mapper/root`` then mounts
the verified device. So the slot a UKI boots is the slot whose partition UUIDs match its root hash:
writing a release's tree and those UUIDs into a slot is what makes that slot *its* slot, also under
Secure Boot, where systemd-stub ignores boot-entry options.

Why the tree is made here and not by systemd-repart's ``Verity=``: repart hashes the whole partition,
so the root hash would depend on the slot's size (2 GiB of which the filesystem uses a fifth) and a host
would have to write the slot's padding too. Here the tree covers exactly the filesystem's bytes
(``data_blocks`` in the superblock; the kernel maps only those), and its parameters are a function of the
release's signed ``slot_sha256`` (:func:`params_for`), so the build, the installer and qx-update make the
same tree from the same bytes with no new signed field; each checks the result against the root hash
the UKI names before it trusts the slot.

Format (cryptsetup's "verity" superblock version 1, hash type 1, as ``veritysetup format`` writes it —
tests/common/test_verity.py compares byte for byte): a 512-byte superblock in the first 4 KiB block, then
the tree's levels, top level first; each 4 KiB hash block holds 128 sha256 digests of ``salt || block``,
zero-padded; the root hash is the digest of the single top block.

Pure: no I/O except reading the data through the file object it is given.
"""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 4096                    # data and hash block size (the kernel's page size: what erofs uses too)
ALGORITHM = "sha256"
DIGEST = 32
_PER_BLOCK = BLOCK // DIGEST    # 128 digests per hash block
_SB_MAGIC = b"verity\0\0"
_SB_FORMAT = "<8sII16s32sIIQH6s256s168s"   # cryptsetup lib/verity/verity.c struct verity_sb (512 bytes)
VERITY_ROOT_DEVICE = "/dev/mapper/root"
# The image build puts ROOTHASH_PLACEHOLDER on the UKI's command line (mkosi.conf) and replaces it with the
# real root hash once the root is built (qx_build.sealing): same length, so the UKI's sections keep their places.
ROOTHASH_PLACEHOLDER = "roothash=" + "0" * 64
_ROOTHASH_RE = re.compile(r"^roothash=([0-9a-f]{64})$")


class VerityError(ValueError):
    """Bad input to this module (a size, a hash, a command line): the message names it."""


@dataclass(frozen=True)
class Params:
    salt: bytes
    uuid: uuid.UUID


@dataclass(frozen=True)
class Tree:
    roothash: str       # hex, what roothash= says
    image: bytes        # superblock + levels: the verity partition's first len(image) bytes
    data_blocks: int


def params_for(slot_sha256: str) -> Params:
    """The tree's salt and superblock UUID: functions of the release's signed slot hash, so every maker of
    a release's tree agrees without a signed field of their own (and two releases never share a salt)."""
    if not re.fullmatch(r"[0-9a-f]{64}", slot_sha256 or ""):
        raise VerityError(f"slot_sha256 must be 64 lowercase hex digits, not {slot_sha256!r}")
    salt = hashlib.sha256(b"quantix verity salt\0" + bytes.fromhex(slot_sha256)).digest()
    return Params(salt=salt, uuid=uuid.UUID(bytes=hashlib.sha256(b"quantix verity uuid\0" + salt).digest()[:16], version=4))


def _level_sizes(data_blocks: int) -> list[int]:
    """Blocks per level, lowest (digests of data blocks) first; cryptsetup's hash_levels()."""
    sizes = []
    n = data_blocks
    while n > 1:  # one data block: no level, the root hash is that block's digest
        n = -(-n // _PER_BLOCK)
        sizes.append(n)
    return sizes


def tree_size(data_size: int) -> int:
    """Bytes of the verity partition a filesystem of ``data_size`` bytes needs (superblock included)."""
    return BLOCK * (1 + sum(_level_sizes(_blocks(data_size))))


def _blocks(data_size: int) -> int:
    if data_size <= 0 or data_size % BLOCK:
        raise VerityError(f"the data must be a positive multiple of {BLOCK} bytes, not {data_size}")
    return data_size // BLOCK


def superblock(params: Params, data_blocks: int) -> bytes:
    return struct.pack(_SB_FORMAT, _SB_MAGIC, 1, 1, params.uuid.bytes, ALGORITHM.encode(), BLOCK, BLOCK,
                       data_blocks, len(params.salt), b"\0" * 6, params.salt.ljust(256, b"\0"), b"\0" * 168)


def build(src: BinaryIO, data_size: int, params: Params, *,
          progress: Callable[[int], None] | None = None) -> Tree:
    """The tree of the first ``data_size`` bytes read from ``src`` (from its current position; short reads
    are read on, :func:`_read_exactly`). Raises :class:`VerityError` when ``src`` ends before them."""
    n = _blocks(data_size)
    base = hashlib.sha256(params.salt)
    level = bytearray()
    remaining = data_size
    chunk_size = 256 * BLOCK
    while remaining:
        want = min(chunk_size, remaining)
        buf = _read_exactly(src, want)
        if len(buf) != want:
            raise VerityError(f"the data ended {remaining - len(buf)} bytes before its {data_size} bytes")
        mv = memoryview(buf)
        for off in range(0, want, BLOCK):
            h = base.copy()
            h.update(mv[off:off + BLOCK])
            level += h.digest()
        remaining -= want
        if progress:
            progress(want)
    levels: list[bytes] = []
    while len(level) > DIGEST:
        padded = bytes(level) + b"\0" * (-len(level) % BLOCK)
        levels.append(padded)
        nxt = bytearray()
        for off in range(0, len(padded), BLOCK):
            h = base.copy()
            h.update(padded[off:off + BLOCK])
            nxt += h.digest()
        level = nxt
    sb = superblock(params, n).ljust(BLOCK, b"\0")
    return Tree(roothash=bytes(level).hex(), image=sb + b"".join(reversed(levels)), data_blocks=n)


def _read_exactly(src: BinaryIO, n: int) -> bytes:
    """``n`` bytes of ``src``, fewer only at its end (a read that gives nothing: ``b""``, or None from a
    non-blocking stream): a raw stream — a block device opened unbuffered, a pipe — may return less than
    asked without being at its end."""
    buf = src.read(n) or b""
    if len(buf) == n:
        return buf
    out = bytearray(buf)
    while len(out) < n and (more := src.read(n - len(out))):
        out += more
    return bytes(out)


def partuuids(roothash: str) -> tuple[str, str]:
    """The data and hash partitions' GPT UUIDs for ``roothash`` (systemd's convention, see above)."""
    check_roothash(roothash)
    return str(uuid.UUID(roothash[:32])), str(uuid.UUID(roothash[32:]))


def check_roothash(roothash: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", roothash or ""):
        raise VerityError(f"a root hash is 64 lowercase hex digits (sha256), not {roothash!r}")
    return roothash


def roothash_of(cmdline: str | None) -> str | None:
    """The root hash a kernel command line boots (the last ``roothash=`` word, as systemd reads it); None
    if it has none. A ``roothash=`` word that is not a sha256 is refused, not ignored."""
    words = [w for w in (cmdline or "").split() if w.startswith("roothash=")]
    if not words:
        return None
    m = _ROOTHASH_RE.match(words[-1])
    if not m:
        raise VerityError(f"the command line's {words[-1][:80]!r} is not roothash=<64 hex digits>")
    if words[-1] == ROOTHASH_PLACEHOLDER:
        raise VerityError("the command line still has the build's placeholder root hash (all zeros): "
                          "the image build did not seal this UKI")
    return m.group(1)


def with_roothash(cmdline: str, roothash: str) -> str:
    """``cmdline`` with its one ``roothash=`` word (the build's placeholder, or a release's hash when a
    release is derived from another) set to ``roothash``: same length, same place."""
    check_roothash(roothash)
    words = cmdline.split(" ")
    at = [i for i, w in enumerate(words) if w.startswith("roothash=")]
    if len(at) != 1 or not _ROOTHASH_RE.match(words[at[0]]):
        raise VerityError(f"the command line must hold one roothash=<64 hex digits> word: {cmdline!r}")
    words[at[0]] = f"roothash={roothash}"
    return " ".join(words)
