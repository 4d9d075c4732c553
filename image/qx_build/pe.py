"""Minimal PE/COFF section reader for UKIs (``.cmdline``, ``.osrel``, ``.linux``, ``.initrd``...).

Only what the build needs: list sections and read one section's bytes. Used to take the kernel
command line from the UKI itself (so boot entries and the manifest cannot drift from it) and to name
the section that differs when two builds are compared.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from qx_common.errors import UserError


@dataclass(frozen=True)
class Section:
    name: str
    offset: int
    size: int  # bytes of raw data in the file
    virtual_size: int


def sections(path: Path) -> list[Section]:
    data = path.read_bytes()
    if data[:2] != b"MZ":
        raise UserError(f"{path}: not a PE file (no MZ header)")
    (pe_off,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe_off : pe_off + 4] != b"PE\0\0":
        raise UserError(f"{path}: not a PE file (no PE signature)")
    coff = pe_off + 4
    n_sections, = struct.unpack_from("<H", data, coff + 2)
    opt_size, = struct.unpack_from("<H", data, coff + 16)
    table = coff + 20 + opt_size
    out = []
    for i in range(n_sections):
        base = table + 40 * i
        name = data[base : base + 8].rstrip(b"\0").decode("ascii", "replace")
        vsize, _vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, base + 8)
        out.append(Section(name, raw_ptr, raw_size, vsize))
    return out


def read_section(path: Path, name: str) -> bytes:
    for s in sections(path):
        if s.name == name:
            with path.open("rb") as f:
                f.seek(s.offset)
                # Raw data is padded to the file alignment; the virtual size is the real length.
                return f.read(min(s.size, s.virtual_size) if s.virtual_size else s.size)
    raise UserError(f"{path}: no {name} section")


def cmdline(path: Path) -> str:
    return read_section(path, ".cmdline").rstrip(b"\0").decode().strip()
