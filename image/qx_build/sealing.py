"""Seal a built release for dm-verity: the root's hash tree into the disk image, the root hash into the UKI.

mkosi builds the root slot (erofs) and a signed UKI whose command line holds
:data:`qx_common.verity.ROOTHASH_PLACEHOLDER` (mkosi.conf): the root hash exists only once the root
does. Then, in this order (:func:`qx_build.build.run`, and the e2e tests' derived releases):

1. :func:`seal_disk` — the tree of the erofs bytes (``slot_size``, salt and UUID from ``slot_sha256``:
   the same function the installer and qx-update use, :mod:`qx_common.verity`) written into the disk
   image's ``root-a-verity`` partition, and ``root-a``/``root-a-verity`` given the partition UUIDs the
   root hash names (systemd's discovery convention);
2. :func:`seal_uki` — the UKI's ``.cmdline`` with the root hash in place of the placeholder (same
   length: no section moves), its old signature removed, signed again, and checked with sbverify.

Why not systemd-repart's ``Verity=`` (what ParticleOS uses): see :mod:`qx_common.verity` — repart
hashes the whole 2 GiB partition, so the root hash would depend on the slot's size and padding.
"""

from __future__ import annotations

import os
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common import verity
from qx_common.errors import ExternalError, UserError
from qx_common.progress import Progress
from qx_common.slot import root_label, verity_label
from qx_build import gpt, pe
from qx_build.secureboot import KeyPair, sign, verify


def tree_of(root: Path, slot_size: int, slot_sha256: str) -> verity.Tree:
    """The hash tree of the first ``slot_size`` bytes of ``root`` (the erofs image or partition file)."""
    bar = Progress("hashing root (dm-verity)", slot_size)
    with root.open("rb") as f:
        tree = verity.build(f, slot_size, verity.params_for(slot_sha256), progress=bar.update)
    bar.close()
    return tree


def seal_disk(disk: Path, tree: verity.Tree, *, slot: str = "a") -> None:
    """Write ``tree`` into the disk image's verity partition of ``slot`` and set both partition UUIDs."""
    parts = gpt.read_table(disk)
    data, hashp = gpt.find(parts, root_label(slot)), gpt.find(parts, verity_label(slot))
    if len(tree.image) > hashp.size:
        raise UserError(f"{disk}: the root's hash tree ({len(tree.image)} bytes) does not fit "
                        f"{hashp.name} ({hashp.size} bytes)", hint="enlarge image/repart/*-verity.conf")
    if tree.data_blocks * verity.BLOCK > data.size:
        raise UserError(f"{disk}: the root ({tree.data_blocks * verity.BLOCK} bytes) does not fit {data.name}")
    fd = os.open(disk, os.O_WRONLY)
    try:
        os.pwrite(fd, tree.image, hashp.start)
        os.fsync(fd)
    finally:
        os.close(fd)
    data_uuid, hash_uuid = verity.partuuids(tree.roothash)
    for part, value in ((hashp, hash_uuid), (data, data_uuid)):
        r.run(["sfdisk", "--no-reread", "--no-tell-kernel", "--part-uuid", str(disk), str(part.number), value])
    log.step(f"verity: {data.name} sealed, root hash {tree.roothash}")


def seal_uki(src: Path, dst: Path, roothash: str, signing: KeyPair) -> str:
    """``dst``: the UKI ``src`` with ``roothash`` on its command line, signed by ``signing``. Returns
    the new command line."""
    old = pe.cmdline(src)
    new = verity.with_roothash(old, roothash)
    section = next((s for s in pe.sections(src) if s.name == ".cmdline"), None)
    if section is None:
        raise UserError(f"{src}: no .cmdline section")
    data = bytearray(src.read_bytes())
    body = data[section.offset:section.offset + section.size]
    at = body.find(old.encode())
    if at < 0 or len(new) != len(old):
        raise ExternalError(f"{src}: its .cmdline section does not hold the command line it was read as")
    data[section.offset + at:section.offset + at + len(old)] = new.encode()
    unsigned = dst.with_name(dst.name + ".unsigned")
    unsigned.write_bytes(data)
    try:
        if pe.is_signed(unsigned):
            r.run(["sbattach", "--remove", str(unsigned)])
        sign(unsigned, dst, signing)
    finally:
        unsigned.unlink(missing_ok=True)
    verify(dst, signing, what="the sealed UKI")
    if pe.cmdline(dst) != new:
        raise ExternalError(f"{dst}: the sealed UKI does not carry the new command line")
    return new
