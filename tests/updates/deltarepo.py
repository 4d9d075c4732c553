"""Releases for the delta-update tests and bench: real erofs images of real trees, published by the
real update server's repository code (chunk store, chunk indexes, delegated TUF roles), served as static
files on 127.0.0.1.

:func:`make_tree` writes a reproducible tree (files of random bytes and of text); :func:`erofs` makes the
root image with ``mkfs.erofs`` (fixed timestamp and UUID, so the same tree gives the same bytes);
:func:`write_build` lays out a build directory as qx-build does (payload, UKI, manifest, SHA256SUMS).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path
from typing import Any

UUID = "2f8c4a3e-1b7d-4c55-9a10-6d2e8f0b7c11"
CMDLINE = "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200"


def make_tree(root: Path, *, seed: int = 1, files: int = 48, changed: dict[str, bytes] | None = None) -> Path:
    """``files`` files of 8 KiB…320 KiB (random and text), in a few directories; ``changed`` overrides."""
    rnd = random.Random(seed)
    for i in range(files):
        p = root / f"usr/lib/d{i % 6}/file{i:03d}.{'bin' if i % 3 else 'txt'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        size = rnd.randrange(8 << 10, 320 << 10)
        if i % 3:
            p.write_bytes(rnd.randbytes(size))
        else:
            words = [f"word{rnd.randrange(5000)}" for _ in range(size // 8)]
            p.write_text(" ".join(words)[:size])
    for rel, data in (changed or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def erofs(tree: Path, out: Path) -> bytes:
    subprocess.run(["mkfs.erofs", "--quiet", "-T0", f"-U{UUID}", "--all-root", str(out), str(tree)], check=True,
                   capture_output=True)
    return out.read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_build(base: Path, version: str, image: bytes, uki: bytes, *, zstd_level: int = 3) -> Path:
    """A build directory of ``version`` with root payload ``image`` (zstd) and UKI ``uki``."""
    d = base / f"build-{version}"
    d.mkdir(parents=True)
    name = f"quantix-os_{version}"
    payload = subprocess.run(["zstd", "-q", f"-{zstd_level}", "-c"], input=image, stdout=subprocess.PIPE,
                             check=True).stdout
    (d / f"{name}.root.erofs.zst").write_bytes(payload)
    (d / f"{name}.efi").write_bytes(uki)

    def describe(p: Path) -> dict[str, Any]:
        return {"file": p.name, "size": p.stat().st_size, "sha256": _sha(p.read_bytes())}

    root = describe(d / f"{name}.root.erofs.zst") | {
        "uncompressed_size": len(image), "uncompressed_sha256": _sha(image), "slot_size_min": len(image)}
    fake = {"file": f"{name}.raw", "size": 1, "sha256": "0" * 64}
    manifest = {
        "format": 1, "product": "Quantix OS", "image_id": "quantix-os", "version": version, "security_epoch": 0,
        "architecture": "x86-64", "source_date_epoch": 1700000000, "build_time": "2023-11-14T22:13:20Z",
        "kernel_cmdline": CMDLINE, "packages": [{"name": "linux-image-amd64", "version": "6.1"}],
        "artifacts": {"root": root, "uki": describe(d / f"{name}.efi"), "disk": fake,
                      "iso": fake | {"file": f"{name}.iso"}},
    }
    (d / f"{name}.manifest.json").write_text(json.dumps(manifest, indent=2))
    files = sorted(p for p in d.iterdir())
    (d / "SHA256SUMS").write_text("".join(f"{_sha(p.read_bytes())}  {p.name}\n" for p in files))
    return d


def uki_bytes(seed: int, size: int = 1 << 20, *, patch: bytes = b"") -> bytes:
    """A stand-in UKI: reproducible bytes; ``patch`` replaces bytes in the middle (a new command line)."""
    # Not the trees' random stream (make_tree's seeds): a UKI shares no chunk with a root image.
    data = bytearray(b"MZ" + random.Random(f"uki-{seed}").randbytes(size - 2))
    if patch:
        mid = size // 2
        data[mid:mid + len(patch)] = patch
    return bytes(data)
