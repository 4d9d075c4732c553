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


def unsigned_view(data: bytes) -> bytes:
    """``data`` (a PE image) without its Authenticode signature: the certificate table cut off, the
    security directory entry and the header checksum zeroed — the bytes a signature covers, minus what
    sbsign writes (its signature carries the signing time, so two signings never match)."""
    (pe_off,) = struct.unpack_from("<I", data, 0x3C)
    opt = pe_off + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    sec_dir = opt + (112 if magic == 0x20B else 96) + 4 * 8
    cert_off, cert_size = struct.unpack_from("<II", data, sec_dir)
    out = bytearray(data[:cert_off] if cert_size else data)
    out[opt + 64 : opt + 68] = b"\0" * 4
    out[sec_dir : sec_dir + 8] = b"\0" * 8
    return bytes(out).rstrip(b"\0")  # sbsign pads the image to 8 bytes before the table


def is_signed(path: Path) -> bool:
    """Whether the PE file carries a certificate table (not whether it verifies: sbverify says that)."""
    data = path.read_bytes()[:4096]
    (pe_off,) = struct.unpack_from("<I", data, 0x3C)
    opt = pe_off + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    _off, size = struct.unpack_from("<II", data, opt + (112 if magic == 0x20B else 96) + 4 * 8)
    return size > 0


def content_sha256(path: Path) -> str:
    """sha256 of a UKI with its signatures set aside (its own and the embedded kernel's): what a
    reproducible build must give bit for bit when signing stamps the time (:func:`unsigned_view`)."""
    import hashlib

    data = path.read_bytes()
    h = hashlib.sha256()
    parts = sections(path)
    first = min((s.offset for s in parts if s.size), default=len(data))
    h.update(unsigned_view(data)[:first])
    for s in parts:
        body = data[s.offset : s.offset + s.size]
        if body[:2] == b"MZ":  # an embedded PE (the kernel): signed on its own by ukify --sign-kernel
            body = unsigned_view(body)
        h.update(s.name.encode() + b"\0" + body)
    return h.hexdigest()


def cmdline(path: Path) -> str:
    return read_section(path, ".cmdline").rstrip(b"\0").decode().strip()
