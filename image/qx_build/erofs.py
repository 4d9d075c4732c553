"""Read an erofs superblock: how many bytes of a partition the filesystem really uses.

The update payload carries only those bytes (not the slot's padding). Layout (linux
fs/erofs/erofs_fs.h): the superblock sits at offset 1024; ``magic`` (le32) at +0, ``blkszbits`` (u8)
at +12, ``blocks`` (le32) at +36.
"""

from __future__ import annotations

import struct
from pathlib import Path

from qx_common.errors import UserError

EROFS_MAGIC = 0xE0F5E1E2
_SB_OFFSET = 1024


def filesystem_size(image: Path) -> int:
    with image.open("rb") as f:
        f.seek(_SB_OFFSET)
        sb = f.read(64)
    if len(sb) < 40:
        raise UserError(f"{image}: too short to hold an erofs superblock")
    (magic,) = struct.unpack_from("<I", sb, 0)
    if magic != EROFS_MAGIC:
        raise UserError(f"{image}: not an erofs filesystem (magic {magic:#010x})")
    blkszbits = sb[12]
    (blocks,) = struct.unpack_from("<I", sb, 36)
    if not 9 <= blkszbits <= 16:
        raise UserError(f"{image}: implausible erofs block size 2^{blkszbits}")
    return blocks << blkszbits
