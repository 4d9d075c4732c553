"""The release artifacts: update payload, UKI, manifest and SHA256SUMS (see docs/update-format.md)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_common.version import IMAGE_ID, PRODUCT_NAME
from qx_build import erofs
from qx_build.hashing import CHUNK, sha256_file
from qx_common.progress import Progress

# zstd levels per build profile: a release is what hosts download (the smallest payload); a fast build
# (make image FAST=1) has the same format, only a lower level, for development and test loops.
ZSTD_LEVELS = {"release": 19, "fast": 3}
# A release's root payload also uses long-distance matching over a 128 MiB window (2**27, the largest any
# zstd decoder takes without --memory=): an erofs image repeats content far apart (2.8 MB less of 134.6).
# Decoding it costs the host up to that much memory in its zstd process while an update is written.
ZSTD_LONG_WINDOW_LOG = {"release": 27, "fast": None}


def compress_root(root_partition: Path, out: Path, *, profile: str = "release") -> dict[str, object]:
    """Compress the erofs filesystem bytes (not the slot padding) of ``root_partition`` to ``out``."""
    fs_size = erofs.filesystem_size(root_partition)
    level = ZSTD_LEVELS[profile]
    long = ZSTD_LONG_WINDOW_LOG[profile]
    flags = [f"-{level}", *([f"--long={long}"] if long else [])]
    log.step(f"payload: zstd {' '.join(flags)} ({profile} build) of {fs_size / 1024**2:.0f} MiB of erofs")
    zstd = r.require("zstd")
    bar = Progress("compressing root", fs_size)
    tmp = out.with_name(out.name + ".part")
    try:
        with root_partition.open("rb") as src, tmp.open("wb") as dst:
            # Streamed through a pipe so the progress bar tracks real input consumption; a zstd that
            # dies mid-stream is reported by spawn() as zstd's failure with its stderr, not a broken pipe.
            with r.spawn([zstd, *flags, "-T0", "-q", "-c"], stdin=r.PIPE, stdout=dst,
                         wait_timeout=None) as proc:
                assert proc.stdin is not None
                remaining = fs_size
                while remaining:
                    chunk = src.read(min(CHUNK, remaining))
                    if not chunk:
                        raise ExternalError(f"{root_partition}: ended before the erofs filesystem did")
                    proc.stdin.write(chunk)
                    remaining -= len(chunk)
                    bar.update(len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written payload behind
        raise
    bar.close()
    tmp.rename(out)
    return {
        "uncompressed_size": fs_size,
        "uncompressed_sha256": sha256_file(root_partition, limit=fs_size, label="hashing root"),
        "slot_size_min": fs_size,
        "compression": {"format": "zstd", "level": level, "profile": profile,
                        **({"window_log": long} if long else {})},
    }


def decompress_root(payload: Path, out: Path) -> Path:
    """The root filesystem of a release's payload, as hosts write it, at ``out`` (any profile's window)."""
    window = max(w for w in ZSTD_LONG_WINDOW_LOG.values() if w)
    with out.open("wb") as dst, r.spawn([r.require("zstd"), "-d", "-q", "-c", f"--long={window}", payload],
                                        stdout=dst, wait_timeout=None):
        pass
    return out


def describe(path: Path, *, sha256: str | None = None) -> dict[str, object]:
    """A release file's manifest entry; ``sha256``: its digest when the caller already has it."""
    return {"file": path.name, "size": path.stat().st_size, "sha256": sha256 or sha256_file(path)}


def build_manifest(*, version: str, security_epoch: int, source_date_epoch: int, kernel_cmdline: str,
                   mkosi_manifest: Path, artifacts: dict[str, dict[str, object]],
                   update_trust: dict[str, object] | None = None,
                   secure_boot: dict[str, object] | None = None) -> dict[str, object]:
    """``update_trust``: :func:`qx_build.trust.stage`'s record (which keys the image's TUF root is from);
    ``secure_boot``: :func:`qx_build.secureboot.record` (who signed the boot chain)."""
    packages = json.loads(mkosi_manifest.read_text()).get("packages", [])
    return {
        "format": 1,
        "product": PRODUCT_NAME,
        "image_id": IMAGE_ID,
        "version": version,
        "security_epoch": security_epoch,
        "architecture": "x86-64",
        "source_date_epoch": source_date_epoch,
        "build_time": dt.datetime.fromtimestamp(source_date_epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel_cmdline": kernel_cmdline,
        "packages": sorted(({"name": p["name"], "version": p["version"]} for p in packages),
                           key=lambda p: p["name"]),
        "artifacts": artifacts,
        "update_trust": update_trust or {"keys": "none"},
        "secure_boot": secure_boot or {"signed": False},
    }


def write_sha256sums(path: Path, files: list[Path], *, known: dict[Path, str] | None = None) -> None:
    """``known``: digests the build already computed of files unchanged since (each file is hashed once)."""
    known = known or {}
    lines = [f"{known.get(f) or sha256_file(f)}  {f.name}\n" for f in sorted(files, key=lambda p: p.name)]
    path.write_text("".join(lines))
